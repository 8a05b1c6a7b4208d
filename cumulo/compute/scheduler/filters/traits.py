from cumulo.compute.scheduler.host_state import HostState, RequestSpec


class RequiredTraitsFilter:
    """The host reports every trait the request requires (what Placement's required
    traits do for Nova: e.g. COMPUTE_SECURITY_TPM_2_0 for a server with an emulated TPM)."""

    name = "RequiredTraitsFilter"

    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.required_traits)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return spec.required_traits <= host.traits
