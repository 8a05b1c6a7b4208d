"""Key pairs: Compute key pairs. CreateKeyPair, ImportKeyPair, DescribeKeyPairs,
DeleteKeyPair."""

from __future__ import annotations

from typing import Any

from cumulo.common.service_client import url_path
from cumulo.ec2 import filters
from cumulo.ec2.api import action
from cumulo.ec2.api.tags import set_tags, tag_set, tags_from_specs, tags_of
from cumulo.ec2.core import Ctx
from cumulo.ec2.errors import Ec2Error

ERRORS = {
    "conflict": "InvalidKeyPair.Duplicate",
    "not_found": "InvalidKeyPair.NotFound",
    "quota": "ResourceLimitExceeded",
}


def _os_id(ctx: Ctx, name: str) -> str:
    return f"{ctx.user_id}:{name}"  # key pairs belong to a user, by name


async def _described(ctx: Ctx, keypairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = await ctx.ids.ec2_ids("key", [_os_id(ctx, k["name"]) for k in keypairs], ctx.project_id)
    tags = await tags_of(ctx, list(ids.values()))
    out = []
    for k in keypairs:
        key_id = ids[_os_id(ctx, k["name"])]
        out.append(
            {
                "KeyPairId": key_id,
                "KeyName": k["name"],
                "KeyFingerprint": k["fingerprint"],
                "KeyType": "ed25519" if "ed25519" in (k.get("public_key") or "") else "rsa",
                "PublicKey": k.get("public_key"),
                "Tags": tag_set(tags.get(key_id)),
            }
        )
    return out


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > 255:
        raise Ec2Error("InvalidParameterValue", "A key pair name is 1 to 255 characters.")
    return name


@action("CreateKeyPair")
async def create_key_pair(ctx: Ctx, p: dict[str, Any]) -> dict:
    name = _check_name(p["KeyName"])
    if p.get("KeyType", "rsa") != "rsa":
        raise Ec2Error(
            "InvalidParameterValue",
            "This cloud generates RSA key pairs; import an ed25519 key with ImportKeyPair.",
        )
    made = (
        await ctx.compute("POST", "/os-keypairs", json={"keypair": {"name": name}}, errors=ERRORS)
    )["keypair"]
    described = (await _described(ctx, [made]))[0]
    await set_tags(
        ctx, [described["KeyPairId"]], tags_from_specs(p.get("TagSpecifications"), "key-pair")
    )
    return {
        "KeyName": name,
        "KeyFingerprint": made["fingerprint"],
        "KeyMaterial": made["private_key"],
        "KeyPairId": described["KeyPairId"],
    }


@action("ImportKeyPair")
async def import_key_pair(ctx: Ctx, p: dict[str, Any]) -> dict:
    name = _check_name(p["KeyName"])
    material = p["PublicKeyMaterial"]
    public_key = material.decode(errors="replace") if isinstance(material, bytes) else str(material)
    made = (
        await ctx.compute(
            "POST",
            "/os-keypairs",
            errors={**ERRORS, "bad_request": "InvalidKey.Format"},
            json={"keypair": {"name": name, "public_key": public_key.strip()}},
        )
    )["keypair"]
    described = (await _described(ctx, [made]))[0]
    return {
        "KeyName": name,
        "KeyFingerprint": made["fingerprint"],
        "KeyPairId": described["KeyPairId"],
    }


@action("DescribeKeyPairs")
async def describe_key_pairs(ctx: Ctx, p: dict[str, Any]) -> dict:
    wanted = filters.check(p.get("Filters"), ("key-name", "fingerprint", "key-pair-id"))
    keypairs = [k["keypair"] for k in (await ctx.compute("GET", "/os-keypairs"))["keypairs"]]
    described = await _described(ctx, keypairs)
    names = {d["KeyName"] for d in described}
    for name in p.get("KeyNames") or []:
        if name not in names:
            raise Ec2Error("InvalidKeyPair.NotFound", f"The key pair '{name}' does not exist")
    key_ids = {d["KeyPairId"] for d in described}
    for key_id in p.get("KeyPairIds") or []:
        if key_id not in key_ids:
            raise Ec2Error("InvalidKeyPair.NotFound", f"The key pair '{key_id}' does not exist")
    tags = await tags_of(ctx, list(key_ids))
    out = [
        d
        for d in described
        if (not p.get("KeyNames") or d["KeyName"] in p["KeyNames"])
        and (not p.get("KeyPairIds") or d["KeyPairId"] in p["KeyPairIds"])
        and filters.matches(
            wanted,
            {
                "key-name": d["KeyName"],
                "fingerprint": d["KeyFingerprint"],
                "key-pair-id": d["KeyPairId"],
            },
            tags.get(d["KeyPairId"], {}),
        )
    ]
    if not p.get("IncludePublicKey"):
        for d in out:
            d.pop("PublicKey", None)
    return {"KeyPairs": out}


@action("DeleteKeyPair")
async def delete_key_pair(ctx: Ctx, p: dict[str, Any]) -> dict:
    name = p.get("KeyName")
    if not name and p.get("KeyPairId"):
        keypairs = [k["keypair"] for k in (await ctx.compute("GET", "/os-keypairs"))["keypairs"]]
        by_id = {d["KeyPairId"]: d["KeyName"] for d in await _described(ctx, keypairs)}
        name = by_id.get(p["KeyPairId"])
        if name is None:
            raise Ec2Error(
                "InvalidKeyPair.NotFound", f"The key pair '{p['KeyPairId']}' does not exist"
            )
    if not name:
        raise Ec2Error(
            "MissingParameter", "The request must contain the parameter KeyName or KeyPairId"
        )
    try:
        await ctx.compute("DELETE", url_path("/os-keypairs/{}", name), errors=ERRORS)
    except Ec2Error as err:
        if err.code != "InvalidKeyPair.NotFound":  # EC2 deletes a missing key pair quietly
            raise
    return {"Return": True}
