"""Default RBAC rules of the Image API, after Glance's secure defaults.

Targets carry the image's `owner` (and `member_id` for memberships). Which images
a caller may see (public, community, shared with an accepted membership, owned)
is decided in code, as Glance does; these rules decide what a caller may do.
"""

_OWNER_MEMBER = "rule:cloud_admin or (role:member and project_id:%(owner)s)"
_READER = "rule:cloud_admin or role:reader"

IMAGE_RULES: dict[str, str] = {
    "image:add_image": _OWNER_MEMBER,
    "image:get_image": _READER,
    "image:get_images": _READER,
    "image:modify_image": _OWNER_MEMBER,
    "image:delete_image": _OWNER_MEMBER,
    "image:publicize_image": "rule:cloud_admin",
    "image:communitize_image": _OWNER_MEMBER,
    "image:set_image_owner": "rule:cloud_admin",
    "image:upload_image": _OWNER_MEMBER,
    "image:download_image": _READER,
    "image:deactivate": _OWNER_MEMBER,
    "image:reactivate": _OWNER_MEMBER,
    "image:stage_image": _OWNER_MEMBER,
    "image:import_image": _OWNER_MEMBER,
    "image:add_member": _OWNER_MEMBER,
    "image:delete_member": _OWNER_MEMBER,
    "image:get_member": _READER,
    "image:get_members": _READER,
    "image:modify_member": "rule:cloud_admin or (role:member and project_id:%(member_id)s)",
    "image:get_import_info": _READER,
    "image:get_stores": _READER,
    # Glance's defaults: copying to other stores, removing data from one, and the tasks
    # API are for admins; an image's own tasks for those who may see it.
    "image:copy_image": "rule:cloud_admin",
    "image:delete_image_location": "rule:cloud_admin",
    # Image locations ([image] show_multiple_locations): the owner's readers see them,
    # its members add and replace them (JSON patch); POST /v2/images/{id}/locations
    # (2.17) for the owner's members and services, GET of them for services only.
    "image:get_image_location": "rule:cloud_admin or (role:reader and project_id:%(owner)s)",
    "image:set_image_location": _OWNER_MEMBER,
    "image:add_image_location": "role:service or (role:member and project_id:%(owner)s)",
    "image:fetch_image_location": "role:service",
    "image:get_task": "rule:cloud_admin",
    "image:get_tasks": "rule:cloud_admin",
    "image:add_task": "rule:cloud_admin",
    "image:get_image_tasks": _READER,
    # Metadata definitions: everyone reads (private namespaces: their owner), admins write.
    "image:get_metadef_namespace": _READER,
    "image:get_metadef_namespaces": _READER,
    "image:list_metadef_resource_types": _READER,
    "image:add_metadef_namespace": "rule:cloud_admin",
    "image:modify_metadef_namespace": "rule:cloud_admin",
    "image:delete_metadef_namespace": "rule:cloud_admin",
    "image:add_metadef_resource_type_association": "rule:cloud_admin",
    "image:remove_metadef_resource_type_association": "rule:cloud_admin",
    "image:add_metadef_item": "rule:cloud_admin",
    "image:modify_metadef_item": "rule:cloud_admin",
    "image:delete_metadef_item": "rule:cloud_admin",
    # The cache management API.
    "image:cache_list": "rule:cloud_admin",
    "image:cache_image": "rule:cloud_admin",
    "image:cache_delete": "rule:cloud_admin",
}
