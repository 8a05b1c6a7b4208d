"""Default RBAC rules of the Key Manager API, after Barbican's secure defaults.

Targets are Barbican's: `target.secret.*` or `target.container.*` with the entity's
`project_id` and `creator_id`, `read` ('read' when the caller is a user of the entity's
read ACL) and `read_project_access` (false once a read ACL makes the entity private).
One change from Barbican: a project's `reader` reads its secrets' and containers'
metadata and lists them (never payloads, never writes).
"""

_SECRET_MEMBER = (
    "rule:secret_project_admin or (rule:secret_project_member and rule:secret_owner) or "
    "(rule:secret_project_member and rule:secret_is_not_private)"
)
_SECRET_READER = (
    f"role:admin or {_SECRET_MEMBER} or rule:secret_acl_read or "
    "(rule:secret_project_reader and rule:secret_is_not_private)"
)
_CONTAINER_MEMBER = (
    "rule:container_project_admin or (rule:container_project_member and rule:container_owner)"
    " or (rule:container_project_member and rule:container_is_not_private)"
)
_CONTAINER_READER = (
    f"role:admin or {_CONTAINER_MEMBER} or rule:container_acl_read or "
    "(rule:container_project_reader and rule:container_is_not_private)"
)

KEY_MANAGER_RULES: dict[str, str] = {
    "secret_project_match": "project_id:%(target.secret.project_id)s",
    "secret_project_reader": "role:reader and rule:secret_project_match",
    "secret_project_member": "role:member and rule:secret_project_match",
    "secret_project_admin": "role:admin and rule:secret_project_match",
    "secret_owner": "user_id:%(target.secret.creator_id)s",
    "secret_is_not_private": "True:%(target.secret.read_project_access)s",
    "secret_acl_read": "'read':%(target.secret.read)s",
    "container_project_match": "project_id:%(target.container.project_id)s",
    "container_project_reader": "role:reader and rule:container_project_match",
    "container_project_member": "role:member and rule:container_project_match",
    "container_project_admin": "role:admin and rule:container_project_match",
    "container_owner": "user_id:%(target.container.creator_id)s",
    "container_is_not_private": "True:%(target.container.read_project_access)s",
    "container_acl_read": "'read':%(target.container.read)s",
    "order_project_member": "role:member and project_id:%(target.order.project_id)s",
    # Secrets
    "secrets:post": "role:member",
    "secrets:get": "role:member or role:reader",
    "secret:get": _SECRET_READER,
    "secret:decrypt": f"{_SECRET_MEMBER} or rule:secret_acl_read",
    "secret:put": _SECRET_MEMBER,
    "secret:delete": f"role:admin or {_SECRET_MEMBER}",
    "secret_meta:get": _SECRET_READER,
    "secret_meta:post": _SECRET_MEMBER,
    "secret_meta:put": _SECRET_MEMBER,
    "secret_meta:delete": _SECRET_MEMBER,
    "secret_acls:get": _SECRET_MEMBER,
    "secret_acls:put_patch": _SECRET_MEMBER,
    "secret_acls:delete": _SECRET_MEMBER,
    "secret_consumers:get": f"{_SECRET_MEMBER} or rule:secret_acl_read",
    "secret_consumers:post": f"{_SECRET_MEMBER} or rule:secret_acl_read",
    "secret_consumers:delete": f"{_SECRET_MEMBER} or rule:secret_acl_read",
    # Containers
    "containers:post": "role:member",
    "containers:get": "role:member or role:reader",
    "container:get": _CONTAINER_READER,
    "container:delete": _CONTAINER_MEMBER,
    "container_secret:post": _CONTAINER_MEMBER,
    "container_secret:delete": _CONTAINER_MEMBER,
    "container_consumers:get": f"{_CONTAINER_MEMBER} or rule:container_acl_read",
    "container_consumers:post": f"{_CONTAINER_MEMBER} or rule:container_acl_read",
    "container_consumers:delete": f"{_CONTAINER_MEMBER} or rule:container_acl_read",
    "container_acls:get": _CONTAINER_MEMBER,
    "container_acls:put_patch": _CONTAINER_MEMBER,
    "container_acls:delete": _CONTAINER_MEMBER,
    # Orders
    "orders:post": "role:member",
    "orders:get": "role:member",
    "orders:put": "role:member",
    "order:get": "rule:order_project_member",
    "order:delete": "rule:order_project_member",
}
