"""Default RBAC rules of the Identity API, after Keystone's secure defaults.

Targets are passed as {"target": {...}} and flattened, so rules read
`%(target.project.domain_id)s` as Keystone's do. The base rules (cloud_admin,
system_reader, ...) come from cumulo.common.policy.
"""

_DOMAIN_ADMIN = "(role:admin and domain_id:%(target.{}.domain_id)s)"
_DOMAIN_READER = "(role:reader and domain_id:%(target.{}.domain_id)s)"


def _admin_or_domain_admin(kind: str) -> str:
    return "rule:cloud_admin or " + _DOMAIN_ADMIN.format(kind)


def _reader_or_domain_reader(kind: str) -> str:
    return "rule:system_reader or " + _DOMAIN_READER.format(kind)


IDENTITY_RULES: dict[str, str] = {
    "service_role": "role:service",
    "token_subject": "user_id:%(target.token.user_id)s",
    "owner": "user_id:%(target.user.id)s",
    # tokens
    "identity:validate_token": "rule:system_reader or rule:service_role or rule:token_subject",
    "identity:revoke_token": "rule:cloud_admin or rule:service_role or rule:token_subject",
    # domains
    "identity:get_domain": "rule:system_reader or domain_id:%(target.domain.id)s"
    " or project_domain_id:%(target.domain.id)s",
    "identity:list_domains": "rule:system_reader",
    "identity:create_domain": "rule:cloud_admin",
    "identity:update_domain": "rule:cloud_admin",
    "identity:delete_domain": "rule:cloud_admin",
    # projects
    "identity:get_project": _reader_or_domain_reader("project")
    + " or project_id:%(target.project.id)s",
    "identity:list_projects": "rule:system_reader"
    " or (role:reader and domain_id:%(target.domain_id)s)",
    "identity:list_user_projects": _reader_or_domain_reader("user") + " or rule:owner",
    "identity:create_project": _admin_or_domain_admin("project"),
    "identity:update_project": _admin_or_domain_admin("project"),
    "identity:delete_project": _admin_or_domain_admin("project"),
    # users
    "identity:get_user": _reader_or_domain_reader("user") + " or rule:owner",
    # The service role lists users so that S3 resolves email grantees (their `email`).
    "identity:list_users": "rule:system_reader or (role:reader and domain_id:%(target.domain_id)s)"
    " or rule:service_role",
    "identity:create_user": _admin_or_domain_admin("user"),
    "identity:update_user": _admin_or_domain_admin("user"),
    "identity:delete_user": _admin_or_domain_admin("user"),
    # Keystone checks only the original password; a token sent here must be the user's
    # or an admin's (who could reset the password anyway).
    "identity:change_password": "rule:owner or " + _admin_or_domain_admin("user"),
    # groups
    "identity:get_group": _reader_or_domain_reader("group"),
    "identity:list_groups": "rule:system_reader"
    " or (role:reader and domain_id:%(target.domain_id)s)",
    "identity:list_groups_for_user": _reader_or_domain_reader("user") + " or rule:owner",
    "identity:list_users_in_group": _reader_or_domain_reader("group"),
    "identity:check_user_in_group": _reader_or_domain_reader("group"),
    "identity:create_group": _admin_or_domain_admin("group"),
    "identity:update_group": _admin_or_domain_admin("group"),
    "identity:delete_group": _admin_or_domain_admin("group"),
    "identity:add_user_to_group": _admin_or_domain_admin("group"),
    "identity:remove_user_from_group": _admin_or_domain_admin("group"),
    # roles and grants
    "identity:get_role": "rule:system_reader or role:admin",
    "identity:list_roles": "rule:system_reader or role:admin",
    "identity:create_role": "rule:cloud_admin",
    "identity:update_role": "rule:cloud_admin",
    "identity:delete_role": "rule:cloud_admin",
    "identity:list_implied_roles": "rule:system_reader",
    "identity:get_implied_role": "rule:system_reader",
    "identity:list_role_inference_rules": "rule:system_reader",
    "identity:create_implied_role": "rule:cloud_admin",
    "identity:delete_implied_role": "rule:cloud_admin",
    "identity:check_grant": "rule:system_reader"
    " or (role:reader and domain_id:%(target.domain.id)s)"
    " or (role:reader and domain_id:%(target.project.domain_id)s)",
    "identity:list_grants": "rule:identity:check_grant",
    "identity:create_grant": "rule:cloud_admin"
    " or (role:admin and domain_id:%(target.domain.id)s)"
    " or (role:admin and domain_id:%(target.project.domain_id)s)",
    "identity:revoke_grant": "rule:identity:create_grant",
    "identity:list_system_grants": "rule:system_reader",
    "identity:create_system_grant": "rule:cloud_admin",
    "identity:revoke_system_grant": "rule:cloud_admin",
    "identity:list_role_assignments": "rule:system_reader"
    " or (role:reader and domain_id:%(target.domain_id)s)",
    # catalog
    "identity:get_region": "",
    "identity:list_regions": "",
    "identity:create_region": "rule:cloud_admin",
    "identity:update_region": "rule:cloud_admin",
    "identity:delete_region": "rule:cloud_admin",
    "identity:get_service": "rule:system_reader",
    "identity:list_services": "rule:system_reader",
    "identity:create_service": "rule:cloud_admin",
    "identity:update_service": "rule:cloud_admin",
    "identity:delete_service": "rule:cloud_admin",
    "identity:get_endpoint": "rule:system_reader",
    "identity:list_endpoints": "rule:system_reader",
    "identity:create_endpoint": "rule:cloud_admin",
    "identity:update_endpoint": "rule:cloud_admin",
    "identity:delete_endpoint": "rule:cloud_admin",
    # application credentials: the owning user only (readers of the system may look)
    "identity:get_application_credential": "rule:system_reader or rule:owner",
    "identity:list_application_credentials": "rule:system_reader or rule:owner",
    "identity:create_application_credential": "rule:owner",
    "identity:delete_application_credential": "rule:cloud_admin or rule:owner",
    "identity:get_access_rule": "rule:system_reader or rule:owner",
    "identity:list_access_rules": "rule:system_reader or rule:owner",
    "identity:delete_access_rule": "rule:cloud_admin or rule:owner",
    # credentials (EC2 and others)
    # The service role reads credentials so that S3 checks signatures itself (Swift's
    # s3token secret cache) instead of asking Identity on every request.
    "identity:get_credential": "rule:system_reader or rule:service_role"
    " or user_id:%(target.credential.user_id)s",
    "identity:list_credentials": "rule:system_reader or user_id:%(target.credential.user_id)s",
    "identity:create_credential": "rule:cloud_admin or user_id:%(target.credential.user_id)s",
    "identity:update_credential": "rule:cloud_admin or user_id:%(target.credential.user_id)s",
    "identity:delete_credential": "rule:cloud_admin or user_id:%(target.credential.user_id)s",
    "identity:ec2_get_credential": "rule:system_reader or rule:owner",
    "identity:ec2_list_credentials": "rule:system_reader or rule:owner",
    "identity:ec2_create_credential": "rule:cloud_admin or rule:owner",
    "identity:ec2_delete_credential": "rule:cloud_admin or rule:owner",
    # policy blobs and OAuth1 consumers
    "identity:get_policy": "rule:system_reader",
    "identity:list_policies": "rule:system_reader",
    "identity:create_policy": "rule:cloud_admin",
    "identity:update_policy": "rule:cloud_admin",
    "identity:delete_policy": "rule:cloud_admin",
    "identity:get_consumer": "rule:system_reader",
    "identity:list_consumers": "rule:system_reader",
    "identity:create_consumer": "rule:cloud_admin",
    "identity:update_consumer": "rule:cloud_admin",
    "identity:delete_consumer": "rule:cloud_admin",
    # domain configuration
    "identity:get_domain_config": "rule:system_reader",
    "identity:get_domain_config_default": "rule:system_reader",
    "identity:create_domain_config": "rule:cloud_admin",
    "identity:update_domain_config": "rule:cloud_admin",
    "identity:delete_domain_config": "rule:cloud_admin",
    "identity:get_security_compliance_domain_config": "",
    # OS-TRUST
    "trustor": "user_id:%(target.trust.trustor_user_id)s",
    "trustee": "user_id:%(target.trust.trustee_user_id)s",
    "identity:create_trust": "user_id:%(target.trust.trustor_user_id)s",
    "identity:list_trusts": "rule:system_reader",
    "identity:list_trusts_for_trustor": "rule:system_reader or rule:trustor",
    "identity:list_trusts_for_trustee": "rule:system_reader or rule:trustee",
    "identity:get_trust": "rule:system_reader or rule:trustor or rule:trustee",
    "identity:delete_trust": "rule:cloud_admin or rule:trustor",
    "identity:list_roles_for_trust": "rule:system_reader or rule:trustor or rule:trustee",
    "identity:get_role_for_trust": "rule:system_reader or rule:trustor or rule:trustee",
    # OS-EP-FILTER
    "identity:list_endpoint_groups": "rule:system_reader",
    "identity:get_endpoint_group": "rule:system_reader",
    "identity:create_endpoint_group": "rule:cloud_admin",
    "identity:update_endpoint_group": "rule:cloud_admin",
    "identity:delete_endpoint_group": "rule:cloud_admin",
    "identity:list_endpoints_associated_with_endpoint_group": "rule:system_reader",
    "identity:list_projects_associated_with_endpoint_group": "rule:system_reader",
    "identity:list_endpoint_groups_for_project": "rule:system_reader",
    "identity:get_endpoint_group_in_project": "rule:system_reader",
    "identity:add_endpoint_group_to_project": "rule:cloud_admin",
    "identity:remove_endpoint_group_from_project": "rule:cloud_admin",
    "identity:list_endpoints_for_project": "rule:system_reader",
    "identity:list_projects_for_endpoint": "rule:system_reader",
    "identity:check_endpoint_in_project": "rule:system_reader",
    "identity:add_endpoint_to_project": "rule:cloud_admin",
    "identity:remove_endpoint_from_project": "rule:cloud_admin",
}
