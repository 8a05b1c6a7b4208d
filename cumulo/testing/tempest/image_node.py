"""A second image API node of a Tempest run's cloud (Tempest's `image_remote`): the same
database and stores as the cloud's image API, its own staging area and image cache and
its own URL, so distributed import (an import or delete sent on to the node that staged
the data) and per-node caches are tested as a multi-node Glance's.

    python -m cumulo.testing.tempest.image_node STATE_DIR NODE_DIR PORT

Not `cumulo api`: that would bootstrap the catalog with this node's URL as the image
endpoint; the harness registers this node as `image_remote` instead.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import uvicorn

from cumulo.common.config import load_config
from cumulo.image.app import create_image_app, open_image_service


async def serve(state_dir: Path, node_dir: Path, port: int) -> None:
    config = load_config(state_dir)
    config.image.worker_self_reference_url = f"http://127.0.0.1:{port}"
    node_dir.mkdir(parents=True, exist_ok=True)
    service = await open_image_service(config, state_dir, node_dir=node_dir)
    server = uvicorn.Server(
        uvicorn.Config(create_image_app(service), host="127.0.0.1", port=port, log_level="warning")
    )
    try:
        await server.serve()
    finally:
        await service.close()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])))
