"""Default RBAC rules of the Compute API (after Nova's secure defaults).

Targets carry the resource's project_id (and user_id for key pairs); the base
rules (cloud_admin, project_member, ...) come from cumulo.common.policy.
"""

COMPUTE_RULES: dict[str, str] = {
    "admin_or_owner_member": "rule:cloud_admin or rule:project_member",
    "admin_or_owner_reader": "rule:system_reader or rule:project_reader",
    # servers
    "compute:servers:create": "rule:cloud_admin or rule:project_member",
    "compute:servers:create:forced_host": "rule:cloud_admin",
    "compute:servers:index": "rule:admin_or_owner_reader",
    "compute:servers:index:get_all_tenants": "rule:system_reader",
    "compute:servers:show": "rule:admin_or_owner_reader",
    "compute:servers:show:host_status": "rule:cloud_admin",
    "compute:servers:show:extended_attributes": "rule:system_reader",
    "compute:servers:update": "rule:admin_or_owner_member",
    "compute:servers:delete": "rule:admin_or_owner_member",
    "compute:servers:action": "rule:admin_or_owner_member",
    "compute:servers:unlock:unlock_override": "rule:cloud_admin",
    "compute:servers:reset_state": "rule:cloud_admin",
    "compute:servers:create_image:allow_volume_backed": "rule:admin_or_owner_member",
    # a volume swap is the Block Storage service's call (Nova: service_api)
    "compute:servers:swap_volume": "role:service",
    # moves (Nova's os-shelve, os-rescue, os-migrate-server, os-evacuate, migrations)
    "compute:servers:shelve": "rule:admin_or_owner_member",
    "compute:servers:shelve_offload": "rule:cloud_admin",
    "compute:servers:unshelve": "rule:admin_or_owner_member",
    "compute:servers:unshelve:unshelve_to_host": "rule:cloud_admin",
    "compute:servers:rescue": "rule:admin_or_owner_member",
    # A project's manager moves its servers where the scheduler says, and follows the
    # moves without seeing hosts (Nova 2025.1's manager defaults); hosts are for admins.
    "admin_or_project_manager": "rule:cloud_admin or rule:project_manager",
    "compute:servers:migrate": "rule:admin_or_project_manager",
    "compute:servers:migrate:host": "rule:cloud_admin",
    "compute:servers:migrate_live": "rule:admin_or_project_manager",
    "compute:servers:migrate_live:host": "rule:cloud_admin",
    "compute:servers:evacuate": "rule:cloud_admin",
    "compute:servers:migrations:index": "rule:admin_or_project_manager",
    "compute:servers:migrations:index:host": "rule:cloud_admin",
    "compute:servers:migrations:show": "rule:cloud_admin",
    "compute:servers:migrations:force_complete": "rule:admin_or_project_manager",
    "compute:servers:migrations:delete": "rule:admin_or_project_manager",
    "compute:migrations:index": "rule:system_reader or rule:project_manager",
    "compute:migrations:index:all_projects": "rule:system_reader",
    "compute:migrations:index:host": "rule:system_reader",
    "compute:servers:console_output": "rule:admin_or_owner_member",
    "compute:servers:metadata": "rule:admin_or_owner_member",
    "compute:servers:metadata:read": "rule:admin_or_owner_reader",
    "compute:servers:tags": "rule:admin_or_owner_member",
    "compute:servers:tags:read": "rule:admin_or_owner_reader",
    # Shared File Systems shares attached to a server (2.97, Nova's os-server-shares).
    "compute:servers:shares": "rule:admin_or_owner_member",
    "compute:servers:shares:read": "rule:admin_or_owner_reader",
    "compute:servers:ips": "rule:admin_or_owner_reader",
    "compute:instance_actions": "rule:admin_or_owner_reader",
    "compute:instance_actions:events:details": "rule:cloud_admin",
    # flavors
    "compute:flavors:read": "",
    "compute:flavors:manage": "rule:cloud_admin",
    "compute:flavors:access": "rule:cloud_admin",
    # key pairs: a user's own (admins may name another user with user_id)
    "compute:keypairs": "rule:cloud_admin or user_id:%(user_id)s",
    # cloud views
    "compute:availability_zones:list": "",
    "compute:availability_zones:detail": "rule:system_reader",
    "compute:hypervisors": "rule:system_reader",
    "compute:aggregates": "rule:cloud_admin",
    "compute:services:list": "rule:system_reader",
    "compute:hosts": "rule:cloud_admin",
    "compute:usage:list": "rule:system_reader",
    "compute:instance_usage_audit_log": "rule:system_reader",
    "compute:usage:show": "rule:admin_or_owner_reader",
    "compute:services:update": "rule:cloud_admin",
    "compute:services:delete": "rule:cloud_admin",
    "compute:limits": "",
    "compute:extensions": "",
    "compute:quotas:show": "rule:admin_or_owner_reader",
    "compute:quotas:defaults": "",
    "compute:quotas:update": "rule:cloud_admin",
    "compute:server_groups:create": "rule:cloud_admin or role:member",
    "compute:server_groups:read": "rule:admin_or_owner_reader",
    "compute:server_groups:delete": "rule:admin_or_owner_member",
    "compute:server_groups:index:all_projects": "rule:system_reader",
    "compute:diagnostics": "rule:cloud_admin",
    "compute:console_auth_tokens": "rule:cloud_admin",
    # what the Network service reports about servers' ports (its service user)
    "compute:server_external_events": "rule:cloud_admin or role:service",
    # what a Block Storage driver asks of the host (Nova: service_api)
    "compute:assisted_volume_snapshots": "role:service",
}
