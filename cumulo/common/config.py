"""Configuration: one TOML file in the state dir, validated by pydantic models.

Every setting has a default, so a missing file or section means "the embedded
all-in-one cloud": SQLite files in the state dir, services on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, field_validator

CONFIG_FILE = "cumulo.toml"
DEFAULT_STATE_DIR = Path("~/.local/share/cumulo")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseConfig(_Section):
    # One SQLAlchemy URL for every service, e.g. postgresql+asyncpg://user@host/cumulo:
    # each service uses its own database <name>_<service> on that server (cumulo_identity,
    # cumulo_compute, ...), created on first start if the user may create databases.
    # Empty: one SQLite file per service in the state dir.
    url: str = ""


class SecurityComplianceConfig(_Section):
    """Keystone's [security_compliance] options; each is off unless set."""

    # Failed logins in a row before the account is locked (Keystone's message, 401; 0: off).
    lockout_failure_attempts: int = Field(0, ge=0)
    # Seconds a locked account stays locked (0: until an admin enables the user).
    lockout_duration: int = Field(1800, ge=0)
    # Days a password is valid (0: forever); passwords set before it was enabled never expire.
    password_expires_days: int = Field(0, ge=0)
    # A password changed by its user must differ from this many previous ones (0: off).
    unique_last_password_count: int = Field(0, ge=0)
    # Days a self-service password must be used before its user may change it again.
    minimum_password_age: int = Field(0, ge=0)
    # New users and passwords an admin resets must be changed before any other use.
    change_password_upon_first_use: bool = False
    # Every new password must match this regular expression (Python `re`, search; "": any).
    password_regex: str = ""
    # What the regex demands, in words: told to a user whose password fails it.
    password_regex_description: str = ""

    @field_validator("password_regex")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return pattern


class IdentityConfig(_Section):
    token_expiration: int = Field(3600, ge=60, description="token lifetime, seconds")
    bcrypt_rounds: int = Field(12, ge=4, le=31)
    # How long validated tokens, catalogs and role sets stay cached (seconds).
    cache_time: float = Field(30.0, ge=0)
    max_active_keys: int = Field(3, ge=3)
    list_limit: int = Field(1000, ge=1)
    # Project whose admins are cloud admins (Keystone's admin_project_name).
    admin_project: str = "admin"
    # Expired tokens a service may still validate with ?allow_expired=1 (seconds).
    allow_expired_window: int = Field(2 * 24 * 3600, ge=0)
    admin_password: str = ""
    demo_password: str = ""
    # The service user's password (service-to-service calls).
    service_password: str = ""
    security_compliance: SecurityComplianceConfig = SecurityComplianceConfig()
    # TOTP passcodes of this many 30 s windows before the current one are accepted too.
    totp_included_previous_windows: int = Field(1, ge=0, le=10)
    # Lifetime (seconds) of an auth receipt: the time a user has to give the next factor.
    receipt_expiration: int = Field(300, ge=1, le=86400)


class ImageQuota(_Section):
    image_count: int = Field(100, ge=0, description="images a project may own")
    image_size_total: int = Field(1 << 40, ge=0, description="bytes a project may store")


class ImageStoreConfig(_Section):
    """One place image data is kept ([[image.stores]]; Glance's enabled_backends)."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str = ""
    # "file": a directory; "object_store": the Object Storage, in the service project's
    # account (Glance's swift store), objects in `container` (SLOs past 200 MiB); "http":
    # read-only, images whose data a web server holds (Glance's http store: locations
    # added to images, never uploads; never the default store).
    type: str = Field(default="file", pattern=r"^(file|object_store|http)$")
    # Its directory (type file); default <state>/images/<id> (the single default store:
    # <state>/images).
    directory: str = ""
    container: str = Field(default="glance", pattern=r"^[^/]{1,200}$")
    # Images past this many MiB are Static Large Objects of segments this large (type
    # object_store; Glance's swift_store_large_object_chunk_size).
    segment_size_mb: int = Field(default=200, ge=1)
    # Preference (Glance's store weight): an image's stores are listed, and its data
    # read, highest weight first.
    weight: int = 0


class WebDownloadConfig(_Section):
    """Which URLs `web-download` imports may fetch (Glance's import_filtering_opts)."""

    allowed_schemes: list[str] = Field(default_factory=lambda: ["http", "https"])
    # Empty: any host not disallowed.
    allowed_hosts: list[str] = Field(default_factory=list)
    disallowed_hosts: list[str] = Field(default_factory=list)
    # Empty: any port.
    allowed_ports: list[int] = Field(default_factory=lambda: [80, 443])
    timeout: float = Field(60.0, gt=0, description="seconds without data before giving up")


class ImageConversionConfig(_Section):
    """Glance's image_conversion import plugin ([image.image_conversion])."""

    output_format: Literal["raw", "qcow2", "vmdk"] = "raw"
    # One `qemu-img convert` (in the inspection's address-space limit) may take this long.
    timeout: float = Field(3600.0, gt=0, description="seconds")


class ImageConfig(_Section):
    # This image API node's own URL as the other nodes reach it (Glance's
    # worker_self_reference_url; empty: the public image URL). Data staged here is here
    # only: an import or delete of it asked of another node is sent on to this one.
    worker_self_reference_url: str = ""
    # Largest single image accepted (bytes).
    max_image_size: int = Field(1 << 40, ge=1)
    # Limits of the qemu-img inspection of uploaded data.
    inspect_timeout: float = Field(30.0, gt=0)
    inspect_memory: int = Field(1 << 30, ge=64 << 20, description="address space, bytes")
    # Default per-project quotas, and overrides by project id.
    quota: ImageQuota = ImageQuota()
    project_quotas: dict[str, ImageQuota] = Field(default_factory=dict)
    list_limit: int = Field(25, ge=1, description="default page size of image lists")
    max_list_limit: int = Field(1000, ge=1)
    max_members: int = Field(128, ge=0, description="members of one image")
    # Several stores (multi-store): the first is the default. Empty: one store, `file`.
    stores: list[ImageStoreConfig] = Field(default_factory=list)
    web_download: WebDownloadConfig = WebDownloadConfig()
    # Run on imported data before it is stored (Glance's image_import_plugins): by
    # glance-direct, web-download and glance-download, never copy-image. Off by default.
    import_plugins: list[Literal["image_conversion"]] = Field(default_factory=list)
    image_conversion: ImageConversionConfig = ImageConversionConfig()
    # Properties a glance-download import copies from the remote image (glob patterns).
    glance_download_properties: list[str] = Field(
        default_factory=lambda: ["hw_*", "trait:*", "os_distro", "os_secure_boot", "os_type"]
    )
    # A cache of image data on this API node (Glance's cache management API), filled by
    # queueing images; off by default (with filesystem stores it only duplicates data).
    cache_enabled: bool = False
    cache_max_size: int = Field(10 << 30, ge=0, description="bytes kept in the cache")
    # Image locations (Glance's options of the same names, off by default: they show
    # where the data is): `locations` in image bodies, and owners may add, replace and
    # (admins) remove them with JSON patch; `direct_url`, the preferred location's URL.
    show_multiple_locations: bool = False
    show_image_direct_url: bool = False
    # Locations added with POST /v2/images/{id}/locations (2.17): their data is read and
    # hashed in the background (checked against `validation_data` when given); off: the
    # hashes are taken from `validation_data` as given (Glance's do_secure_hash).
    do_secure_hash: bool = True


class NetworkConfig(_Section):
    # Data plane: "auto" (linuxbridge with CAP_NET_ADMIN and the tools, else noop),
    # "noop" (records desired state only), "linuxbridge" or "openvswitch" (Open vSwitch
    # as Neutron's ML2/OVS agent lays it out; Debian's openvswitch-switch).
    driver: str = Field("auto", pattern="^(auto|noop|linuxbridge|openvswitch)$")
    # The agent's host name (topic network.<agent_host>); empty: this machine's name.
    agent_host: str = ""
    # What `cumulo init` creates, as DevStack does: the external network `public`...
    public_cidr: str = "172.24.4.0/24"
    public_gateway: str = "172.24.4.1"
    # ...and the demo project's `private` network behind `router1`.
    private_cidr: str = "10.0.0.0/26"
    # ...and a shared default IPv4 subnet pool (DevStack's shared-default-subnetpool-v4),
    # which auto-allocated topologies (`openstack network auto allocated topology create`,
    # servers with networks "auto") take their subnets from; empty: none is made.
    default_subnet_pool: str = "10.1.0.0/16"
    default_subnet_pool_prefixlen: int = Field(26, ge=8, le=30)
    # linuxbridge: the host reaches floating IPs, as DevStack's br-ex: the external
    # networks' bridges get a veth leg in the host's own namespace holding their subnet's
    # gateway address (`cmlo-x<scope>`), so `ssh <floating ip>` works from this machine.
    host_leg: bool = True
    dns_nameservers: list[str] = Field(default_factory=list)
    mtu: int = Field(1500, ge=68, le=9000)
    # Metadata from the DHCP namespace (linuxbridge; Neutron's DHCP agent options):
    # isolated_metadata (enable_isolated_metadata) routes guests on subnets no router
    # serves to 169.254.169.254 in the DHCP namespace, where a metadata proxy listens;
    # force_metadata routes every DHCP subnet's guests there.
    isolated_metadata: bool = True
    force_metadata: bool = False
    # openvswitch: VXLAN to other hosts (Neutron's [ovs] local_ip and tunnel_types):
    # this host's tunnel address with its prefix ("192.168.50.1/24", empty: no br-tun),
    # the host interface that carries it (moved onto br-phy in the data plane's
    # namespace) and the other hosts' tunnel addresses.
    ovs_tunnel_local_ip: str = ""
    ovs_tunnel_device: str = ""
    ovs_tunnel_peers: list[str] = Field(default_factory=list)
    # linuxbridge: tenant networks across hosts over VXLAN (Neutron's [vxlan] local_ip):
    # this host's underlay address with its prefix ("192.168.50.1/24"; empty: each host's
    # bridges are its own) and the host interface that carries it (moved into the data
    # plane's namespace). The other hosts are learnt from their agents' reports (L2
    # population); their underlay MTU must be 50 bytes above the networks' MTU.
    tunnel_local_ip: str = ""
    tunnel_device: str = ""
    # Provider networks on host interfaces (Neutron's linuxbridge agent and ML2 type
    # drivers): physical network name -> this host's interface carrying it (moved into
    # the data plane's namespace: give one that holds no address the host needs); which
    # physical networks flat networks may use ("*": any); VLAN ranges per physical
    # network ("physnet1:100:199", or "physnet1" for admins' VLANs only); the type of
    # new tenant networks ("vxlan", "vlan" from the ranges, or "local").
    physical_interface_mappings: dict[str, str] = Field(default_factory=dict)
    flat_networks: list[str] = Field(default_factory=lambda: ["*"])
    network_vlan_ranges: list[str] = Field(default_factory=list)
    tenant_network_types: list[Literal["vxlan", "vlan", "local"]] = Field(
        default_factory=lambda: ["vxlan"]
    )
    # VNIs of vxlan networks (ML2's [ml2_type_vxlan] vni_ranges, "first:last"): tenant
    # networks (and an admin's vxlan network without an id) take one from these ranges;
    # empty: their VNI is derived from the network id (every host agrees without a table).
    vni_ranges: list[str] = Field(default_factory=list)
    # Distributed routers (Neutron's dvr extension and options of the same names): the
    # extension offered (enable_dvr), and whether a router made without `distributed`
    # is one (router_distributed; only admins choose otherwise). Routed east-west on
    # every openvswitch host with ports on the router's subnets; linuxbridge agents are
    # Neutron's `legacy` L3 agents, which are never given a distributed router.
    enable_dvr: bool = True
    router_distributed: bool = False
    # Per-host MACs of distributed routing (Neutron's dvr_base_mac): frames a host's
    # router sends into a tunnel leave with its own, so the gateway's MAC never moves.
    dvr_base_mac: str = Field("fa:16:3f:00:00:00", pattern="^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
    # HA routers (Neutron's l3-ha extension and options of the same names): whether a
    # router made without `ha` is one (only admins choose otherwise), on how many L3
    # agents one is scheduled (0: every one), and the subnet of each project's HA network
    # (VRRP between the routers' keepalived instances).
    l3_ha: bool = False
    max_l3_agents_per_router: int = Field(3, ge=0)
    l3_ha_net_cidr: str = "169.254.192.0/18"
    # Default per-project quotas (-1: unlimited), Neutron's defaults.
    quota: dict[str, int] = Field(
        default_factory=lambda: {
            "network": 100,
            "subnet": 100,
            "subnetpool": -1,
            "port": 500,
            "router": 10,
            "floatingip": 50,
            "security_group": 10,
            "security_group_rule": 100,
            "rbac_policy": 10,
        }
    )


class ComputeConfig(_Section):
    # This host's name for its compute agent (topic compute.<host>); empty: the machine's.
    host: str = ""
    # Hypervisor driver: "qemu" (real guests), "fake" (in-memory guests, no QEMU needed),
    # or "auto": qemu when qemu-system-x86_64 is installed, else fake.
    driver: str = Field("auto", pattern="^(auto|qemu|fake)$")
    # QEMU accelerator: "auto" probes KVM with a real boot and falls back to TCG.
    qemu_accel: str = Field("auto", pattern="^(auto|kvm|tcg)$")
    # QEMU machine type of guests whose image has no hw_machine_type (Nova's [libvirt]
    # hw_machine_type): pc (i440FX) or q35, or a versioned name (pc-q35-7.2).
    qemu_machine_type: str = Field("pc", pattern=r"^(pc|q35|pc-i440fx-[0-9.]+|pc-q35-[0-9.]+)$")
    # Give every guest a config drive (ISO9660 config-2) with its metadata.
    force_config_drive: bool = True
    # Extra in-process fake compute hosts (scale simulation); 0: just this host.
    fake_hosts: int = Field(0, ge=0)
    # How long a fake guest takes to boot (seconds), for realistic simulations.
    fake_spawn_delay: float = Field(0.0, ge=0)
    availability_zone: str = "nova"
    max_attempts: int = Field(3, ge=1, description="hosts tried per build")
    # Other destinations a live migration tries when the chosen one cannot take it
    # (its ports do not bind there): -1 until none is left, as Nova's.
    migrate_max_retries: int = Field(-1, ge=-1)
    # A build with no progress for this long (seconds) goes to ERROR (its host died).
    build_timeout: float = Field(600.0, gt=0)
    service_down_time: float = Field(60.0, gt=0, description="heartbeat age of a down host")
    report_interval: float = Field(10.0, gt=0)
    cpu_allocation_ratio: float = Field(4.0, gt=0)
    ram_allocation_ratio: float = Field(1.0, gt=0)
    disk_allocation_ratio: float = Field(1.0, gt=0)
    reserved_host_memory_mb: int = Field(512, ge=0)
    reserved_host_disk_gb: int = Field(0, ge=0)
    # Weighers spread instances over hosts (true) or stack them (false).
    spread: bool = True
    # A resize may stay on the server's own host (Nova's default is false; devstack's
    # single-host clouds set true, and so does cumulo: most clouds start with one host).
    allow_resize_to_same_host: bool = True
    # Seconds a shelved server keeps its host before it is offloaded: 0 at once, -1 never.
    shelved_offload_time: int = Field(0, ge=-1)
    # The vTPM secret policies (flavor `hw:tpm_secret_security`) this host offers, Nova's
    # [libvirt] supported_tpm_secret_security: `user`, `host`, `deployment` (the secret
    # is the cloud's service user's). A policy left out: such servers never land here.
    supported_tpm_secret_security: list[Literal["user", "host", "deployment"]] = Field(
        default_factory=lambda: ["user", "host", "deployment"]
    )
    # Where other compute hosts reach this one's migration streams and disk exports
    # (QEMU live migration, cold-migration disk copies); empty: this machine's address.
    migration_address: str = ""
    # Remote consoles: the noVNC page users are sent to (empty: this cloud's own proxy,
    # http://<public host>:<ports.novncproxy>/vnc_lite.html), how long a console URL
    # stays valid (seconds), and the browser origins besides the proxy's own host.
    novncproxy_base_url: str = ""
    console_token_ttl: int = Field(600, ge=1)
    console_allowed_origins: list[str] = Field(default_factory=list)
    # noVNC's web client served by the proxy (empty: /usr/share/novnc when installed).
    novnc_dir: str = ""
    # Serial consoles (Nova's [serial_console] enabled / base_url): the guests' serial
    # port through the serial proxy's websocket (empty: ws://<public host>:<ports.serialproxy>/).
    serial_console_enabled: bool = True
    serialproxy_base_url: str = ""
    # SPICE consoles (Nova's [spice]): every QEMU guest with a screen has a SPICE server
    # beside VNC. spice-html5 goes through this cloud's proxy (empty base URL:
    # http://<public host>:<ports.spicehtml5proxy>/spice_auto.html); spice-direct (2.99)
    # hands a SPICE client the host and port of the guest's server, which the compute host
    # listens on at spice_server_listen (Nova's server_listen) for its QEMU guests; its URL
    # is that of an outside spice-direct proxy (Nova's default below).
    spice_console_enabled: bool = True
    spicehtml5proxy_base_url: str = ""
    spice_direct_proxy_base_url: str = "http://127.0.0.1:13002/nova"
    spice_server_listen: str = "127.0.0.1"
    # Where this compute host relays its guests' VNC, serial and spice-html5 consoles
    # for the console proxies of another host (Nova's [vnc] server_listen and
    # server_proxyclient_address): a TCP port per console asked for, on this address,
    # open while its token lives. Empty: migration_address, else this machine's address
    # (the management network's, never every interface).
    console_server_listen: str = ""
    # Signed images (Nova's [glance] options of the same names): verify the data of images
    # with img_signature properties before a guest uses it (on: every cumulo cloud has a
    # Key Manager to read their certificates from); certificate validation with no
    # trusted certificates asked for uses default_trusted_certificate_ids (off, as Nova's:
    # on, a signed image boots only with trusted certificates).
    verify_glance_signatures: bool = True
    enable_certificate_validation: bool = False
    default_trusted_certificate_ids: list[str] = Field(default_factory=list)


class VolumeBackendConfig(_Section):
    """One backend of a storage host ([[volume.backends]]; Cinder's enabled_backends)."""

    # Its name in host@<name>#<pool> and the bus topic volume.<host>@<name>.
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    driver: str = Field("file", pattern="^(file)$")
    # What volume types select it by (extra spec volume_backend_name); default: name.
    volume_backend_name: str = ""
    volume_format: str = Field("raw", pattern="^(raw|qcow2)$")
    # Capacity reported to the scheduler (GiB); 0: the size of the filesystem.
    capacity_gb: int = Field(0, ge=0)
    # Where its files live; default <state>/volumes/<name>.
    directory: str = ""
    # Thin provisioning: the scheduler lets the volumes' sizes add up to this many
    # times the capacity (Cinder's default 20; 1.0: no overcommit).
    max_over_subscription_ratio: float = Field(20.0, ge=1.0)
    # Share of the capacity kept free (percent).
    reserved_percentage: int = Field(0, ge=0, le=100)
    # Its availability zone; default: [volume] availability_zone.
    availability_zone: str = ""
    # More capabilities the scheduler matches volume types' extra specs against.
    capabilities: dict[str, str | int | float | bool] = Field(default_factory=dict)
    # How hosts reach its volumes (Cinder's target_protocol): "" the file itself on this
    # host and NBD from others; "iscsi" an iSCSI target through tgtd for every host
    # (Cinder's LVM driver with target_helper tgtadm). Default: [volume] target_protocol.
    target_protocol: str = Field("", pattern="^(|nbd|iscsi)$")


class VolumeConfig(_Section):
    # This storage host's name (volumes' os-vol-host-attr:host is <host>@<backend>#<pool>).
    host: str = ""
    # The single backend of a host with no [[volume.backends]] ("file", under <state>/volumes).
    backend: str = Field("file", pattern="^(file)$")
    volume_format: str = Field("raw", pattern="^(raw|qcow2)$")
    # Capacity reported to the scheduler (GiB); 0: the size of the filesystem.
    capacity_gb: int = Field(0, ge=0)
    # Several backends on this host, chosen per volume by the scheduler; replaces the above.
    backends: list[VolumeBackendConfig] = Field(default_factory=list)
    # `cumulo up` runs this config's backends in-process (false: all storage is on
    # `cumulo volume` hosts).
    run_backends: bool = True
    # Backends report their capacity (heartbeat) this often; one silent for
    # service_down_time seconds is down and gets no new volumes.
    report_interval: float = Field(10.0, gt=0)
    service_down_time: float = Field(60.0, gt=0)
    # Address NBD exports bind to (the storage network), for guests on other hosts.
    nbd_address: str = "127.0.0.1"
    # The backends' target_protocol unless they set their own ("" or "iscsi", see
    # VolumeBackendConfig), and the iSCSI portal (Cinder's target_ip_address and
    # target_port; tgtd listens there when cumulo starts it) and target names' prefix.
    target_protocol: str = Field("", pattern="^(|nbd|iscsi)$")
    iscsi_address: str = "127.0.0.1"
    iscsi_port: int = Field(3260, ge=1, le=65535)
    target_prefix: str = Field(
        "iqn.2010-10.org.openstack:", pattern=r"^(iqn|eui)\.[A-Za-z0-9.:-]+$"
    )
    default_volume_type: str = "__DEFAULT__"
    availability_zone: str = "nova"
    list_limit: int = Field(1000, ge=1, description="largest page of a list")
    # Default per-project quotas (-1: unlimited), Cinder's defaults.
    quota: dict[str, int] = Field(
        default_factory=lambda: {
            "volumes": 10,
            "snapshots": 10,
            "gigabytes": 1000,
            "per_volume_gigabytes": -1,
            "backups": 10,
            "backup_gigabytes": 1000,
            "groups": 10,
        }
    )


class MessagingConfig(_Section):
    # memory:// (all-in-one, in-process) or rabbit://user:pass@host:5672/
    transport_url: str = "memory://"
    # Prefix of every queue on the broker: clouds sharing one broker use different ones.
    namespace: str = Field("cumulo", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # RabbitMQ: the topics' queues are quorum queues (replicated over a broker cluster,
    # oslo.messaging's rabbit_quorum_queue), or "classic" (a broker older than 3.10).
    queue_type: str = Field("quorum", pattern="^(quorum|classic)$")
    # Where notifications go (oslo.messaging's notification driver): "messaging" (the
    # services' topic exchanges on RabbitMQ, as OpenStack's), "log" (JSON lines in
    # <state dir>/notifications.jsonl), "noop"; "auto": messaging on RabbitMQ, else log.
    notification_driver: str = Field("auto", pattern="^(auto|messaging|log|noop)$")


class MetadataConfig(_Section):
    # HMAC-SHA256 key shared by the metadata service and the network agent's proxies
    # (Nova's metadata_proxy_shared_secret); generated on first start.
    shared_secret: str = ""
    # Where the proxies listen inside each router namespace (nftables redirects
    # 169.254.169.254:80 there), and the address they reach the metadata service at.
    proxy_port: int = Field(9697, ge=1, le=65535)
    service_host: str = "127.0.0.1"
    # Vendor data (Nova's [api] vendordata_*; see cumulo.metadata.vendordata): providers
    # StaticJSON and/or DynamicJSON, the static JSON file, dynamic targets "name@url".
    vendordata_providers: list[Literal["StaticJSON", "DynamicJSON"]] = Field(
        default_factory=lambda: ["StaticJSON"]
    )
    vendordata_jsonfile_path: str = ""
    vendordata_dynamic_targets: list[str] = Field(default_factory=list)
    vendordata_dynamic_connect_timeout: float = Field(5.0, gt=0)
    vendordata_dynamic_read_timeout: float = Field(5.0, gt=0)
    vendordata_dynamic_ssl_certfile: str = ""
    vendordata_dynamic_failure_fatal: bool = False
    # The Keystone user the dynamic targets are called as (Nova's
    # [vendordata_dynamic_auth], password auth): its token goes in X-Auth-Token. No
    # user name: no token is sent. The auth URL defaults to this cloud's Identity.
    vendordata_dynamic_auth_url: str = ""
    vendordata_dynamic_auth_username: str = ""
    vendordata_dynamic_auth_password: str = ""
    vendordata_dynamic_auth_project_name: str = ""
    vendordata_dynamic_auth_user_domain_name: str = "Default"
    vendordata_dynamic_auth_project_domain_name: str = "Default"


class StoragePolicyConfig(_Section):
    """One storage policy ("pool"): its own object ring, chosen per container."""

    index: int = Field(ge=0)
    name: str = Field(pattern=r"^[A-Za-z0-9-]{1,64}$")
    default: bool = False
    # Deprecated: existing containers keep it, new containers cannot choose it.
    deprecated: bool = False
    # Replicas of the ring `cumulo up` creates for it when it has none yet.
    replicas: int = Field(3, ge=1)


class ContainerSyncRealmConfig(_Section):
    """A container sync realm (Swift's container-sync-realms.conf section): clusters that
    agreed to sync containers with each other, the key(s) signing their requests."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    key: str = Field(min_length=1)
    # A second key accepted too (while the realm's key is rotated).
    key2: str = ""
    # Cluster name: its proxy's Swift endpoint, e.g. https://host:8080/v1/ (empty: this
    # cloud's own, its public URL on ports.object_store).
    clusters: dict[str, str] = Field(default_factory=dict)


class ObjectStoreConfig(_Section):
    # Device directories (one per ring device name); default <state>/object-store/devices.
    devices: str = ""
    # Ring and builder files; default <state>/object-store/rings.
    rings: str = ""
    # Salt of the ring's hash of every name (Swift's swift_hash_path_prefix/suffix),
    # generated on first start; never change it once data is stored.
    hash_path_prefix: str = ""
    hash_path_suffix: str = ""
    # What `cumulo up` creates when there is no ring: this many devices d0, d1, ...
    # under `devices`, partition power and minimum hours between moves of a partition.
    device_count: int = Field(3, ge=1)
    # Several hosts: the port where `cumulo up` serves this host's devices to the other
    # hosts' object servers (as `cumulo object-server` does on a storage host; give it
    # this address in the ring); 0: not served (every ring device is on this host).
    # Requests to it are signed with backend_secret; keep it on the storage network.
    storage_port: int = Field(0, ge=0, le=65535)
    # The key signing every request between the proxy and the storage hosts (HMAC-SHA256),
    # generated by `cumulo init`; the same on every host. A list while rotating: the
    # first signs, every one is accepted (docs/object-store.md). Empty: the key file of a
    # state dir made before this setting, <state>/object-store/backend.key.
    backend_secret: str | list[str] = ""
    part_power: int = Field(10, ge=0, le=24)
    min_part_hours: int = Field(1, ge=0)
    policies: list[StoragePolicyConfig] = Field(
        default_factory=lambda: [StoragePolicyConfig(index=0, name="Policy-0", default=True)]
    )
    # Keystone authorization (Swift's keystoneauth): accounts are <reseller_prefix><project>,
    # a user with one of operator_roles in the project owns its account, the
    # reseller_admin_role may use every account.
    reseller_prefix: str = "AUTH_"
    operator_roles: list[str] = Field(default_factory=lambda: ["admin", "member"])
    reseller_admin_role: str = "ResellerAdmin"
    # Signs admin requests for /info (`?swiftinfo_sig=&swiftinfo_expires=`, HMAC-SHA1 of
    # "GET\n<expires>\n/info", Swift's admin_key); empty: no admin /info (403).
    info_admin_key: str = ""
    max_file_size: int = Field(5368709122, ge=1)
    container_listing_limit: int = Field(10000, ge=1)
    account_listing_limit: int = Field(10000, ge=1)
    # Background daemons of the storage nodes (seconds between passes; 0: not run).
    replicator_interval: float = Field(30.0, ge=0)
    auditor_interval: float = Field(300.0, ge=0)
    updater_interval: float = Field(30.0, ge=0)
    expirer_interval: float = Field(60.0, ge=0)
    reconciler_interval: float = Field(30.0, ge=0)
    # Container sync (Swift's container_sync middleware and daemon): the realms whose
    # clusters this one syncs with (`cumulo init` makes one for this cloud), seconds
    # between passes of the sync daemon, and old-style X-Container-Sync-To full URLs
    # (allowed, as Swift's allow_full_urls, to the hosts of container_sync_allowed_hosts).
    container_sync_realms: list[ContainerSyncRealmConfig] = Field(default_factory=list)
    container_sync_interval: float = Field(30.0, ge=0)
    container_sync_allow_full_urls: bool = True
    container_sync_allowed_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    # S3 on the same port: virtual-host style requests name the bucket in the host,
    # `<bucket>.<s3_domain>` (path style, `/<bucket>/<key>`, works on any host name).
    s3_domain: str = "s3.localhost"
    # Processes serving the object-store port in `cumulo up` (Swift's proxy `workers`):
    # the cloud's own and workers - 1 object-store proxies beside it, for the proxy's
    # Python on several cores (object_store/proxy_workers.py says what each caches).
    workers: int = Field(1, ge=1, le=64)


class LimitsConfig(_Section):
    # Bounds on what a request may bring, every API alike (oslo.middleware's sizelimit
    # and the like): a JSON body's bytes and nesting, the URL and the header fields.
    json_body_bytes: int = Field(1024 * 1024, ge=1024)
    json_depth: int = Field(64, ge=2, le=900)
    url_bytes: int = Field(8192, ge=256)
    header_bytes: int = Field(16384, ge=1024)
    # A client that sends its body slower than this between two chunks gets 408.
    body_read_timeout: float = Field(60.0, gt=0)
    # Requests per second per token (or per address without one); 0 turns it off (the
    # all-in-one default). Bursts up to rate_limit_burst; over it: 429 with Retry-After.
    rate_limit_per_second: float = Field(0.0, ge=0)
    rate_limit_burst: int = Field(20, ge=1)
    # qemu-img conversions (volumes from and to images, snapshots) running at once.
    conversions: int = Field(4, ge=1)


class TlsConfig(_Section):
    # HTTPS on every API and the console proxy (`cumulo up --tls`). Without files of the
    # operator's, cumulo makes a CA and a server certificate in <state dir>/tls. Paths are
    # absolute or relative to the state dir; ca_file is what clients verify against.
    enabled: bool = False
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""


class ServicePorts(_Section):
    identity: int = 5000
    compute: int = 8774
    metadata: int = 8775
    image: int = 9292
    network: int = 9696
    block_storage: int = 8776
    novncproxy: int = 6080
    serialproxy: int = 6083
    spicehtml5proxy: int = 6082
    object_store: int = 8080
    dashboard: int = 8000
    ec2: int = 8788
    key_manager: int = 9311


class KeyManagerConfig(_Section):
    # Barbican's [DEFAULT] limits: a secret's payload (bytes, as sent: base64 text counts
    # its characters) over max_allowed_secret_in_bytes is 413; list pages default to
    # default_limit_paging entries, at most max_limit_paging.
    max_allowed_secret_in_bytes: int = Field(20000, ge=1)
    max_allowed_request_size_in_bytes: int = Field(25000, ge=1024)
    default_limit_paging: int = Field(10, ge=1)
    max_limit_paging: int = Field(100, ge=1)
    # Barbican's host_href: the base of secret_ref, order_ref and container_ref (empty:
    # the public URL of ports.key_manager).
    host_href: str = ""


class DashboardConfig(_Section):
    # Signs the session cookies and encrypts the sessions kept in the dashboard's database
    # (shared by every process serving the dashboard); generated on first start.
    session_secret: str = ""
    # The password of the dashboard's own Identity user (`dashboard`, no role anywhere):
    # the trustee of the trust a project-scoped session makes at login, so that its token
    # is renewed while its user is active. Generated on first start.
    service_password: str = ""
    # Seconds a session may renew its token silently after the password was last given
    # (the trust's lifetime); then the password is asked again. 0: never silently.
    session_max_lifetime: int = Field(12 * 3600, ge=0)


class CumuloConfig(_Section):
    host: str = "127.0.0.1"
    # The address written into the catalog; defaults to host (or 127.0.0.1 when
    # host is a wildcard address).
    public_host: str = ""
    region: str = "RegionOne"
    # YAML file of oslo.policy rules overriding the defaults (relative to state dir).
    policy_file: str = "policy.yaml"
    database: DatabaseConfig = DatabaseConfig()
    identity: IdentityConfig = IdentityConfig()
    image: ImageConfig = ImageConfig()
    network: NetworkConfig = NetworkConfig()
    compute: ComputeConfig = ComputeConfig()
    volume: VolumeConfig = VolumeConfig()
    messaging: MessagingConfig = MessagingConfig()
    metadata: MetadataConfig = MetadataConfig()
    object_store: ObjectStoreConfig = ObjectStoreConfig()
    dashboard: DashboardConfig = DashboardConfig()
    key_manager: KeyManagerConfig = KeyManagerConfig()
    ports: ServicePorts = ServicePorts()
    tls: TlsConfig = TlsConfig()
    limits: LimitsConfig = LimitsConfig()

    @property
    def catalog_host(self) -> str:
        if self.public_host:
            return self.public_host
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def scheme(self) -> str:
        return "https" if self.tls.enabled else "http"

    def public_url(self, port: int) -> str:
        """Where clients reach a service on `port`: scheme, catalog host and port."""
        return f"{self.scheme}://{self.catalog_host}:{port}"


def resolve_state_dir(state_dir: str | os.PathLike[str] | None = None) -> Path:
    raw = state_dir or os.environ.get("CUMULO_STATE_DIR") or DEFAULT_STATE_DIR
    return Path(raw).expanduser().resolve()


def load_config(state_dir: Path) -> CumuloConfig:
    path = state_dir / CONFIG_FILE
    if not path.exists():
        return CumuloConfig()
    with path.open("rb") as f:
        return CumuloConfig.model_validate(tomllib.load(f))


def write_config(state_dir: Path, config: CumuloConfig) -> Path:
    path = state_dir / CONFIG_FILE
    data = config.model_dump(exclude_defaults=False)
    path.write_text(tomli_w.dumps(data))
    path.chmod(0o600)
    return path


def database_url(config: CumuloConfig, state_dir: Path, service: str) -> str:
    if config.database.url:
        return config.database.url
    return f"sqlite+aiosqlite:///{state_dir / (service + '.db')}"
