from cumulo.compute.scheduler.host_state import HostState, RequestSpec

# Image properties name architectures as Glance does; hosts report Linux machine names.
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "i686": "i386"}


def _arch(value: str) -> str:
    value = value.lower()
    return _ARCH_ALIASES.get(value, value)


class ImagePropertiesFilter:
    """The image's hypervisor_type and architecture properties, when set, match the host."""

    name = "ImagePropertiesFilter"

    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.image_properties)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        props = spec.image_properties
        wanted_type = props.get("hypervisor_type") or props.get("img_hv_type")
        if wanted_type and wanted_type.lower() != host.hypervisor_type.lower():
            # QEMU and KVM guests are the same images to us.
            if {wanted_type.lower(), host.hypervisor_type.lower()} != {"qemu", "kvm"}:
                return False
        arch = props.get("architecture") or props.get("hw_architecture")
        return not arch or _arch(arch) == _arch(host.cpu_arch)
