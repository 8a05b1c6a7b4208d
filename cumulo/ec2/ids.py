"""EC2 ids for OpenStack UUIDs, made once and kept (Item rows).

`i-0123456789abcdef0`: the prefix says the kind, then 17 hex digits (AWS's long ids).
Ids of the older 8-digit form are accepted where a client brings them."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cumulo.common.db import Database
from cumulo.ec2.errors import Ec2Error, not_found
from cumulo.ec2.models import Item, Tag

ID_RE = re.compile(r"^([a-z]+(?:-[a-z]+)?)-([0-9a-f]{8}|[0-9a-f]{17})$")
IMAGE_KINDS = ("ami", "aki", "ari")


def new_id(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(9)[:17]}"


def kind_of(ec2_id: str) -> str | None:
    m = ID_RE.match(ec2_id or "")
    return m.group(1) if m else None


class IdMap:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ec2_ids(
        self, kind: str, os_ids: list[str], project_id: str | None = None
    ) -> dict[str, str]:
        """The EC2 id of each OpenStack id of this kind, made for those that have none."""
        wanted = list(dict.fromkeys(i for i in os_ids if i))
        if not wanted:
            return {}
        found = await self.db.run_read(_read_ids, kind, wanted)
        missing = [i for i in wanted if i not in found]
        if missing:
            try:
                found.update(await self.db.run_write(_make_ids, kind, missing, project_id))
            except IntegrityError:  # made at the same time by another request
                found.update(await self.db.run_read(_read_ids, kind, missing))
        return found

    async def known(self, kinds: tuple[str, ...], os_ids: list[str]) -> dict[str, str]:
        """The EC2 ids already made for these OpenStack ids, of any of `kinds`."""
        wanted = [i for i in set(os_ids) if i]
        return await self.db.run_read(_read_known, kinds, wanted) if wanted else {}

    async def ec2_id(self, kind: str, os_id: str, project_id: str | None = None) -> str:
        return (await self.ec2_ids(kind, [os_id], project_id))[os_id]

    async def items(self, ec2_ids: list[str]) -> dict[str, Item]:
        return await self.db.run_read(_read_items, list(ec2_ids))

    async def os_id(self, ec2_id: Any, kinds: tuple[str, ...] | str) -> str:
        """The OpenStack id of an EC2 id of one of `kinds`; `Invalid...ID.NotFound` (or
        `.Malformed` for what is not an id of that kind) otherwise."""
        return (await self.os_ids([ec2_id], kinds))[ec2_id]

    async def os_ids(self, ec2_ids: list[Any], kinds: tuple[str, ...] | str) -> dict[str, str]:
        kinds = (kinds,) if isinstance(kinds, str) else kinds
        for ec2_id in ec2_ids:
            if not isinstance(ec2_id, str) or kind_of(ec2_id) not in kinds:
                code = not_found(kinds[0], str(ec2_id)).code.replace(".NotFound", ".Malformed")
                raise Ec2Error(code, f'Invalid id: "{ec2_id}"')
        items = await self.items(ec2_ids)
        for ec2_id in ec2_ids:
            if ec2_id not in items:
                raise not_found(kinds[0], ec2_id)
        return {i: items[i].os_id for i in ec2_ids}

    async def record(self, ec2_id: str, **values: Any) -> None:
        """Set fields of an item (data is stored as JSON)."""
        if "data" in values and values["data"] is not None:
            values["data"] = json.dumps(values["data"], default=str)
        await self.db.run_write(_update_item, ec2_id, values)

    async def add(self, items: list[Item]) -> None:
        await self.db.run_write(_add_items, items)

    async def forget(self, ec2_ids: list[str]) -> None:
        await self.db.run_write(_delete_items, ec2_ids)


def _read_ids(s: Session, kind: str, os_ids: list[str]) -> dict[str, str]:
    rows = s.execute(select(Item.os_id, Item.id).where(Item.kind == kind, Item.os_id.in_(os_ids)))
    return dict(rows.all())


def _read_known(s: Session, kinds: tuple[str, ...], os_ids: list[str]) -> dict[str, str]:
    query = select(Item.os_id, Item.id).where(Item.kind.in_(kinds), Item.os_id.in_(os_ids))
    return dict(s.execute(query).all())


def _make_ids(s: Session, kind: str, os_ids: list[str], project_id: str | None) -> dict[str, str]:
    made = {os_id: new_id(kind) for os_id in os_ids}
    s.add_all(Item(id=i, kind=kind, os_id=o, project_id=project_id) for o, i in made.items())
    s.flush()
    return made


def _read_items(s: Session, ec2_ids: list[str]) -> dict[str, Item]:
    return {row.id: row for row in s.scalars(select(Item).where(Item.id.in_(ec2_ids)))}


def _update_item(s: Session, ec2_id: str, values: dict) -> None:
    item = s.get(Item, ec2_id)
    if item is not None:
        for k, v in values.items():
            setattr(item, k, v)


def _add_items(s: Session, items: list[Item]) -> None:
    s.add_all(items)


def _delete_items(s: Session, ec2_ids: list[str]) -> None:
    """The items and every project's tags on them."""
    s.execute(delete(Tag).where(Tag.item_id.in_(ec2_ids)))
    s.execute(delete(Item).where(Item.id.in_(ec2_ids)))
