"""Default RBAC rules of the Block Storage API, after Cinder's secure defaults.

Targets carry the resource's `project_id`; which volumes a caller may list is
decided in code (its project, or every project for admins with all_tenants).
"""

_MEMBER = "rule:admin_or_project_member"
_READER = "rule:admin_or_project_reader"
_ADMIN = "rule:cloud_admin"

VOLUME_RULES: dict[str, str] = {
    "volume:create": _MEMBER,
    "volume:get": _READER,
    "volume:get_all": _READER,
    "volume:update": _MEMBER,
    "volume:delete": _MEMBER,
    "volume:extend": _MEMBER,
    "volume:update_readonly_flag": _MEMBER,
    "volume:update_volume_metadata": _MEMBER,
    "volume:get_volume_metadata": _READER,
    "volume:set_image_metadata": _MEMBER,
    "volume_extension:volume_actions:upload_image": _MEMBER,
    "volume_extension:volume_actions:attach": _MEMBER,
    "volume_extension:volume_admin_actions:reset_status": _ADMIN,
    "volume_extension:volume_admin_actions:force_delete": _ADMIN,
    "volume_extension:volume_admin_actions:force_detach": _ADMIN,
    "volume_extension:snapshot_admin_actions:reset_status": _ADMIN,
    "volume_extension:snapshot_admin_actions:force_delete": _ADMIN,
    "snapshot_extension:snapshot_actions:update_snapshot_status": _MEMBER,
    "volume:get_all_tenants": _ADMIN,
    "volume_extension:volume_host_attribute": _ADMIN,
    "volume:create_snapshot": _MEMBER,
    "volume:get_snapshot": _READER,
    "volume:get_all_snapshots": _READER,
    "volume:update_snapshot": _MEMBER,
    "volume:delete_snapshot": _MEMBER,
    "volume:attachment_create": _MEMBER,
    "volume:attachment_get": _READER,
    "volume:attachment_update": _MEMBER,
    "volume:attachment_complete": _MEMBER,
    "volume:attachment_delete": _MEMBER,
    "volume_extension:types_manage": _ADMIN,
    "volume_extension:type_get": "",
    "volume_extension:quotas:show": _READER,
    "volume_extension:quotas:update": _ADMIN,
    "volume_extension:quotas:delete": _ADMIN,
    "volume_extension:services:index": _ADMIN,
    "volume_extension:capacity": _ADMIN,
    "volume_extension:capabilities": _ADMIN,
}
