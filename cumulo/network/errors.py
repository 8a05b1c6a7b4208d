"""The Network API's errors: each class name is the NeutronError `type` clients see."""

from __future__ import annotations

from cumulo.common.faults import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
)


class InvalidInput(BadRequest):
    pass


class NetworkNotFound(NotFound):
    pass


class SubnetNotFound(NotFound):
    pass


class SubnetPoolNotFound(NotFound):
    pass


class PortNotFound(NotFound):
    pass


class RouterNotFound(NotFound):
    pass


class FloatingIPNotFound(NotFound):
    pass


class SecurityGroupNotFound(NotFound):
    pass


class SecurityGroupRuleNotFound(NotFound):
    pass


class RouterInterfaceNotFoundForSubnet(NotFound):
    pass


class ExternalGatewayForFloatingIPNotFound(NotFound):
    pass


class TagNotFound(NotFound):
    pass


class NetworkInUse(Conflict):
    pass


class SubnetInUse(Conflict):
    pass


class PortInUse(Conflict):
    pass


class RouterInUse(Conflict):
    pass


class SecurityGroupInUse(Conflict):
    pass


class SubnetPoolInUse(Conflict):
    pass


class IpAddressGenerationFailure(Conflict):
    pass


class MacAddressInUse(Conflict):
    pass


class OverQuota(Conflict):
    pass


class SecurityGroupRuleExists(Conflict):
    pass


class SecurityGroupCannotRemoveDefault(Conflict):
    pass


class FloatingIPPortAlreadyAssociated(Conflict):
    pass


class InvalidIpForSubnet(BadRequest):
    pass


class SecurityGroupInvalidPortRange(BadRequest):
    pass


class SecurityGroupRuleInvalidProtocol(BadRequest):
    pass


class PolicyNotAuthorized(Forbidden):
    pass


class IpAddressAlreadyAllocated(Conflict):
    pass


class InvalidIpForNetwork(BadRequest):
    pass


class PortSecurityAndIPRequiredForSecurityGroups(BadRequest):
    pass


class RbacPolicyNotFound(NotFound):
    pass


class DuplicateRbacPolicy(Conflict):
    pass


class RbacPolicyInUse(Conflict):
    pass


class InvalidSharedSetting(Conflict):
    pass


class InvalidActionForType(BadRequest):
    pass


class ExternalNetworkInUse(Conflict):
    pass


class SecurityGroupInvalidPortValue(BadRequest):
    pass


class SecurityGroupInvalidIcmpValue(BadRequest):
    pass


class SecurityGroupMissingIcmpType(BadRequest):
    pass


class SecurityGroupInvalidProtocolForPortRange(BadRequest):
    pass


class SecurityGroupProtocolRequiredWithPorts(BadRequest):
    pass


class SecurityGroupDefaultAlreadyExists(Conflict):
    pass


class SecurityGroupCannotUpdateDefault(Conflict):
    pass


class SecurityGroupRemoteGroupAndRemoteIpPrefix(BadRequest):
    pass


class SecurityGroupRuleParameterConflict(BadRequest):
    pass


class MeteringLabelNotFound(NotFound):
    pass


class MeteringLabelRuleNotFound(NotFound):
    pass


class MeteringLabelRuleOverlaps(Conflict):
    pass


class AgentNotFound(NotFound):
    pass


class NetworkHostedByDHCPAgent(Conflict):
    pass


class NetworkNotHostedByDhcpAgent(Conflict):
    pass


class RouterHostedByL3Agent(Conflict):
    pass


class RouterL3AgentMismatch(Conflict):
    pass


class NoVRIDAvailable(Conflict):
    pass


class DistributedHARouterNotSupported(BadRequest):
    pass


class RouterNotHostedByL3Agent(Conflict):
    pass


class FlatNetworkInUse(Conflict):
    pass


class VlanIdInUse(Conflict):
    pass


class TunnelIdInUse(Conflict):
    pass


class NoNetworkAvailable(ServiceUnavailable):
    pass


class NotAuthorized(Forbidden):
    pass


class AutoAllocationFailure(Conflict):
    pass


class DefaultExternalNetworkExists(Conflict):
    pass


class RouterInterfaceInUseByFloatingIP(Conflict):
    pass


class HTTPNotFound(NotFound):
    """What Neutron answers when policy hides a resource."""


class PortBindingNotFound(NotFound):
    pass


class PortBindingAlreadyActive(Conflict):
    pass


class PortBindingAlreadyExists(Conflict):
    pass


class PortBindingError(ApiError):
    """Neutron's PortBindingError: a NeutronException without a code of its own (500)."""
