"""The issue's openstacksdk script: an admin does the identity work, then a project
member tries the same and gets 403 for what it may not do."""

from __future__ import annotations

import uuid

import pytest
from openstack import exceptions

from tests.cloudrunner import CloudRunner


def test_admin_script_then_member_gets_403(cloud: CloudRunner):
    admin = cloud.sdk("cumulo")
    suffix = uuid.uuid4().hex[:8]
    project = admin.identity.create_project(
        name=f"sdk-{suffix}", domain_id="default", description="made by the sdk"
    )
    user = admin.identity.create_user(
        name=f"sdk-user-{suffix}",
        password="s3cret-pass",
        domain_id="default",
        default_project_id=project.id,
    )
    member = admin.identity.find_role("member")
    admin.identity.assign_project_role_to_user(project, user, member)
    group = admin.identity.create_group(name=f"sdk-group-{suffix}", domain_id="default")
    admin.identity.add_user_to_group(user, group)
    assert admin.identity.check_user_in_group(user, group)
    assert user.id in [u.id for u in admin.identity.group_users(group)]
    assignments = list(admin.identity.role_assignments(user_id=user.id))
    assert [a.role["id"] for a in assignments] == [member.id]
    admin.identity.update_project(project, description="changed")
    assert admin.identity.get_project(project.id).description == "changed"

    demo = cloud.sdk("cumulo-demo")
    assert demo.identity.get_token()  # the member is authenticated
    forbidden = [
        lambda: demo.identity.create_project(name=f"nope-{suffix}", domain_id="default"),
        lambda: list(demo.identity.users()),
        lambda: demo.identity.create_user(name=f"nope-{suffix}", domain_id="default"),
        lambda: demo.identity.update_project(project, description="mine"),
        lambda: demo.identity.get_project(project.id),
        lambda: demo.identity.delete_user(user),
        lambda: demo.identity.create_role(name=f"nope-{suffix}"),
        lambda: list(demo.identity.role_assignments()),
        lambda: demo.identity.create_service(type=f"nope-{suffix}", name="nope"),
        lambda: list(demo.identity.groups()),
    ]
    for number, attempt in enumerate(forbidden):
        with pytest.raises(exceptions.ForbiddenException, match="."):
            attempt()
            pytest.fail(f"attempt {number} was allowed")
    # The SDK does not raise for a refused grant: check nothing was granted instead.
    admin_role = admin.identity.find_role("admin")
    demo.identity.assign_project_role_to_user(project, user, admin_role)
    # Nothing the member tried took effect.
    assert [a.role["id"] for a in admin.identity.role_assignments(user_id=user.id)] == [member.id]
    assert admin.identity.get_project(project.id).description == "changed"
    assert admin.identity.find_project(f"nope-{suffix}") is None
    assert admin.identity.find_user(f"nope-{suffix}") is None

    admin.identity.delete_group(group)
    admin.identity.delete_user(user)
    admin.identity.delete_project(project)
