"""Default RBAC rules of the Network API, after Neutron's secure defaults.

Targets carry the resource's `project_id`. Which resources a caller may see at
all (own, shared, external) is decided in code, as Neutron does; these rules
decide what a caller may do, and which admin-only attributes it may set.
"""

_ADMIN = "rule:cloud_admin"
_OWNER = "rule:cloud_admin or (role:member and project_id:%(project_id)s)"
_READER = "rule:cloud_admin or (role:reader and project_id:%(project_id)s)"

NETWORK_RULES: dict[str, str] = {
    "network:admin_only": _ADMIN,
    "network:owner": _OWNER,
    # The compute service (role service) sees and binds any project's ports.
    "network:service": "role:service",
    "network:update_port": _OWNER + " or role:service",
    # ...and deletes the ports it made (Neutron's delete_port: service_api).
    "network:delete_port": _OWNER + " or role:service",
    "network:reader": _READER,
    # Attributes only an admin may set (Neutron: create_network:shared, ...).
    "network:set_shared": _ADMIN,
    "network:set_external": _ADMIN,
    "network:set_provider": _ADMIN,
    "network:create_router:distributed": _ADMIN,
    "network:update_router:distributed": _ADMIN,
    "network:create_router:ha": _ADMIN,
    "network:update_router:ha": _ADMIN,
    "network:set_project": _ADMIN,
    # The compute service binds ports to hosts with its service token (Neutron's service_api).
    "network:set_binding": _ADMIN + " or role:service",
    "network:get_provider": _ADMIN,
    "network:get_binding": _ADMIN + " or role:service",
    # The port bindings API (binding-extended) is Compute's alone, as Neutron's policy.
    "network:manage_bindings": "role:service",
    "network:update_quota": _ADMIN,
    # Sharing with every project (`*`) is an admin's (Neutron: restrict_wildcard).
    "network:create_rbac_policy:target_tenant": _ADMIN,
    "network:update_rbac_policy:target_tenant": _ADMIN,
    "network:get_quota": _READER,
    # Neutron's auto-allocated-topology: a project's readers see (and so make) it.
    "network:get_auto_allocated_topology": _READER,
    "network:delete_auto_allocated_topology": _OWNER,
}
