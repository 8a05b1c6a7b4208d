"""Instance metadata: the OpenStack and EC2 documents a guest reads about itself, from the
config drive or the metadata service (169.254.169.254)."""

from cumulo.metadata.content import (
    EC2_VERSIONS,
    OPENSTACK_VERSIONS,
    InstanceMetadata,
    config_drive_files,
    ec2_files,
    ec2_lookup,
    ec2_meta_data,
    meta_data,
    network_data,
    openstack_files,
    vendor_data2,
)

__all__ = [
    "EC2_VERSIONS",
    "OPENSTACK_VERSIONS",
    "InstanceMetadata",
    "config_drive_files",
    "ec2_files",
    "ec2_lookup",
    "ec2_meta_data",
    "meta_data",
    "network_data",
    "openstack_files",
    "vendor_data2",
]
