"""The all-in-one cloud: state dir, databases, services, and the apps `cumulo up` serves."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from starlette.types import ASGIApp

from cumulo.common import limits
from cumulo.common import tls as tls_files
from cumulo.common.config import (
    CONFIG_FILE,
    ContainerSyncRealmConfig,
    CumuloConfig,
    database_url,
    load_config,
    write_config,
)
from cumulo.common.db import Database
from cumulo.common.notifications import Notifier
from cumulo.common.service_client import ServiceClient
from cumulo.compute.app import create_compute_app
from cumulo.compute.cell import ComputeCell
from cumulo.compute.consoles import (
    create_console_proxy_app,
    create_serial_proxy_app,
    create_spice_proxy_app,
)
from cumulo.dashboard.app import create_dashboard_app, in_process_apis
from cumulo.dashboard.renewal import Trustee
from cumulo.dashboard.sessions import DatabaseSessionStore
from cumulo.ec2.app import create_ec2_app, open_ec2_service
from cumulo.ec2.core import Ec2Service
from cumulo.identity.app import create_identity_app
from cumulo.identity.bootstrap import bootstrap, new_password, write_client_files
from cumulo.identity.core import Identity
from cumulo.identity.tokens import KeyRepository
from cumulo.image.app import create_image_app, open_image_service
from cumulo.image.core import ImageService
from cumulo.key_manager.app import create_key_manager_app, open_key_manager_service
from cumulo.key_manager.core import KeyManagerService
from cumulo.metadata.app import create_metadata_app
from cumulo.metadata.vendordata import VendorData
from cumulo.network.app import create_network_app, open_network_service
from cumulo.network.bootstrap import bootstrap_network
from cumulo.network.core import NetworkService
from cumulo.network.dataplane.metadata_proxy import start_metadata_proxies
from cumulo.network.nova_notifier import NovaNotifier
from cumulo.object_store.app import create_object_store_app, open_object_store
from cumulo.object_store.core import ObjectStore
from cumulo.object_store.storage.backend_auth import initial_secret
from cumulo.object_store.storage.server import create_storage_app
from cumulo.volume.app import create_volume_app, open_volume_service
from cumulo.volume.core import VolumeService

LOG = logging.getLogger(__name__)


def prepare_state_dir(
    state_dir: Path,
    *,
    host: str | None = None,
    database: str | None = None,
    tls: bool | None = None,
) -> CumuloConfig:
    """Create the state dir, its config (with generated passwords) and key repositories."""
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    config = load_config(state_dir)
    changed = not (state_dir / CONFIG_FILE).exists()
    if host is not None and host != config.host:
        config.host, changed = host, True
    if database is not None and database != config.database.url:
        config.database.url, changed = database, True
    for attr in ("admin_password", "demo_password", "service_password"):
        if not getattr(config.identity, attr):
            setattr(config.identity, attr, new_password())
            changed = True
    if not config.metadata.shared_secret:
        config.metadata.shared_secret, changed = secrets.token_hex(32), True
    if not config.dashboard.session_secret:
        config.dashboard.session_secret, changed = secrets.token_hex(32), True
    if not config.dashboard.service_password:
        config.dashboard.service_password, changed = new_password(), True
    if tls is not None and tls != config.tls.enabled:
        config.tls.enabled, changed = tls, True
    if tls_files.ensure(config, state_dir):
        changed = True
    if not config.object_store.hash_path_suffix:
        config.object_store.hash_path_prefix = secrets.token_hex(16)
        config.object_store.hash_path_suffix, changed = secrets.token_hex(16), True
    if not config.object_store.backend_secret:  # a state dir made before: its key file's
        config.object_store.backend_secret, changed = initial_secret(state_dir), True
    if not config.object_store.container_sync_realms:
        # Container sync works out of the box within this cloud: a realm whose one
        # cluster is this cloud's own Swift endpoint (empty: wherever its proxy is).
        config.object_store.container_sync_realms = [
            ContainerSyncRealmConfig(
                name="cumulo", key=secrets.token_hex(32), clusters={"local": ""}
            )
        ]
        changed = True
    if changed:
        write_config(state_dir, config)
    max_keys = config.identity.max_active_keys
    KeyRepository(state_dir / "fernet-keys", max_keys).initialize()
    KeyRepository(state_dir / "credential-keys", max_keys).initialize()
    return config


@dataclass(frozen=True)
class Roles:
    """What one process runs beside the REST APIs (which every Cloud serves).

    `cumulo up` runs everything; `cumulo api` only the APIs (and the network server's
    RPC), leaving the rest to `cumulo conductor`, `cumulo scheduler`, `cumulo compute`,
    `cumulo volume` and `cumulo network-agent`; `cumulo init` runs nothing."""

    conductor: bool = True
    scheduler: bool = True
    compute_hosts: bool = True
    volume_backends: bool = True
    network_agent: bool = True
    network_server: bool = True  # answers the network agents on the bus
    object_daemons: bool = True  # the object store's replicator, auditor, expirer...

    @classmethod
    def nothing(cls) -> Roles:
        return cls(False, False, False, False, False, False, True)

    @classmethod
    def api(cls, *, object_daemons: bool) -> Roles:
        return cls(False, False, False, False, False, True, object_daemons)


ALL_IN_ONE = Roles()


@dataclass
class Cloud:
    """Every service of one all-in-one cloud, ready to serve."""

    state_dir: Path
    config: CumuloConfig
    databases: dict[str, Database] = field(default_factory=dict)
    identity: Identity | None = None
    image: ImageService | None = None
    key_manager: KeyManagerService | None = None
    compute: ComputeCell | None = None
    network: NetworkService | None = None
    volume: VolumeService | None = None
    object_store: ObjectStore | None = None
    ec2: Ec2Service | None = None

    @classmethod
    async def open(
        cls,
        state_dir: Path,
        *,
        agents: bool = True,
        roles: Roles | None = None,
        **overrides: str | bool | None,
    ) -> Cloud:
        """Every service, bootstrapped, and what `roles` says runs here (by default
        everything; without `agents`, nothing beside the APIs: `cumulo init`)."""
        roles = roles or (ALL_IN_ONE if agents else Roles.nothing())
        config = prepare_state_dir(state_dir, **overrides)
        limits.configure(config.limits)
        if not roles.volume_backends:
            config = config.model_copy(deep=True)
            config.volume.run_backends = False
        cloud = cls(state_dir, config)
        db = Database(database_url(config, state_dir, "identity"), "identity")
        cloud.databases["identity"] = db
        await db.migrate()
        # The dashboard's sessions, shared by the processes serving it (cumulo api).
        dashboard_db = Database(database_url(config, state_dir, "dashboard"), "dashboard")
        cloud.databases["dashboard"] = dashboard_db
        await dashboard_db.migrate()
        cloud.identity = Identity(config, state_dir, db)
        cloud.identity.notifier = Notifier(config, state_dir, "identity")
        await bootstrap(cloud.identity, config)
        write_client_files(state_dir, config)
        # Key Manager: Block Storage keeps encrypted volumes' keys there, Compute reads
        # them back at attach, Image and Compute read signed images' certificates, all
        # with the user's token.
        cloud.key_manager = await open_key_manager_service(
            config, state_dir, identity_app=create_identity_app(cloud.identity)
        )
        cloud.identity.invalidation_listeners.append(cloud.key_manager.validator.clear)
        # Image validates tokens through the identity app in-process, and forgets
        # them whenever Identity changes (a revoked token is refused at once).
        cloud.image = await open_image_service(
            config,
            state_dir,
            identity_app=create_identity_app(cloud.identity),
            key_manager_app=create_key_manager_app(cloud.key_manager),
        )
        cloud.identity.invalidation_listeners.append(cloud.image.validator.clear)
        cloud.volume = await open_volume_service(
            config,
            state_dir,
            identity_app=create_identity_app(cloud.identity),
            image_app=create_image_app(cloud.image),
            key_manager_app=create_key_manager_app(cloud.key_manager),
        )
        cloud.identity.invalidation_listeners.append(cloud.volume.validator.clear)
        cloud.network = await open_network_service(
            config,
            state_dir,
            identity_app=create_identity_app(cloud.identity),
            dataplane=roles.network_agent,
            server=roles.network_server,
        )
        cloud.identity.invalidation_listeners.append(cloud.network.validator.clear)
        await bootstrap_network(cloud.network, cloud.identity)
        # Compute: the API service; conductor, scheduler and this host's compute agent
        # in-process too when the roles say so, all on the bus.
        cloud.compute = await ComputeCell.open(
            config,
            state_dir,
            identity_app=create_identity_app(cloud.identity),
            image_app=create_image_app(cloud.image),
            network_app=create_network_app(cloud.network),
            volume_app=create_volume_app(cloud.volume),
            key_manager_app=create_key_manager_app(cloud.key_manager),
            hosts=roles.compute_hosts,
            conductor=roles.conductor,
            scheduler=roles.scheduler,
        )
        cloud.identity.invalidation_listeners.append(cloud.compute.service.validator.clear)
        cloud.object_store = await open_object_store(
            config,
            state_dir,
            identity_app=create_identity_app(cloud.identity),
            daemons=roles.object_daemons,
        )
        cloud.identity.invalidation_listeners.append(cloud.object_store.validator.clear)
        # Image data kept in the Object Storage goes there in-process (also before the
        # ports are served: the first start's demo image).
        await cloud.image.object_store_in_process(create_object_store_app(cloud.object_store))
        # Network tells Compute when a server's floating IPs change (Neutron's nova notifier).
        compute_client = ServiceClient("compute", app=create_compute_app(cloud.compute.service))
        cloud.network.nova_notifier = NovaNotifier(
            compute_client, cloud.network.validator.client.service_token
        )
        cloud.network.on_close.append(compute_client.close)
        # EC2 calls the OpenStack APIs with each caller's token, in-process.
        cloud.ec2 = await open_ec2_service(
            config,
            state_dir,
            apps={
                "identity": create_identity_app(cloud.identity),
                "compute": create_compute_app(cloud.compute.service),
                "image": create_image_app(cloud.image),
                "network": create_network_app(cloud.network),
                "volume": create_volume_app(cloud.volume),
                "object-store": create_object_store_app(cloud.object_store),
            },
        )
        # The network agent's proxies in the router namespaces reach the metadata service.
        await start_metadata_proxies(cloud.network, config)
        return cloud

    def apps(self) -> dict[str, tuple[ASGIApp, int]]:
        assert self.identity is not None and self.image is not None
        assert self.compute is not None
        assert self.network is not None
        assert self.volume is not None
        assert self.object_store is not None
        assert self.ec2 is not None
        assert self.key_manager is not None
        apps: dict[str, tuple[ASGIApp, int]] = {
            "identity": (create_identity_app(self.identity), self.config.ports.identity),
            "image": (create_image_app(self.image), self.config.ports.image),
            "network": (create_network_app(self.network), self.config.ports.network),
            "compute": (create_compute_app(self.compute.service), self.config.ports.compute),
            "block-storage": (create_volume_app(self.volume), self.config.ports.block_storage),
            "object-store": (
                create_object_store_app(self.object_store),
                self.config.ports.object_store,
            ),
            "metadata": (
                create_metadata_app(
                    self.compute.service.db,
                    self.config.metadata.shared_secret,
                    VendorData.from_config(self.config),
                ),
                self.config.ports.metadata,
            ),
            "ec2": (create_ec2_app(self.ec2), self.config.ports.ec2),
            "key-manager": (
                create_key_manager_app(self.key_manager),
                self.config.ports.key_manager,
            ),
            "novncproxy": (
                create_console_proxy_app(self.compute.service.db, self.config),
                self.config.ports.novncproxy,
            ),
            "serialproxy": (
                create_serial_proxy_app(self.compute.service.db, self.config),
                self.config.ports.serialproxy,
            ),
            "spicehtml5proxy": (
                create_spice_proxy_app(self.compute.service.db, self.config),
                self.config.ports.spicehtml5proxy,
            ),
        }
        if self.config.object_store.storage_port:
            # This host's devices for the other storage hosts (cumulo object-server's API).
            apps["object-server"] = (
                create_storage_app(self.object_store.node),
                self.config.object_store.storage_port,
            )
        # The web dashboard calls the APIs above in-process, with each user's token.
        sessions = DatabaseSessionStore(
            self.databases["dashboard"], self.config.dashboard.session_secret.encode()
        )
        apps["dashboard"] = (
            create_dashboard_app(in_process_apis(apps), sessions, Trustee.from_config(self.config)),
            self.config.ports.dashboard,
        )
        return apps

    async def close(self) -> None:
        """Close every part, even when one of them fails: a part left open keeps its
        database connections, which block dropping or migrating its database."""
        parts = [
            self.ec2,
            self.compute,
            self.image,
            self.network,
            self.volume,
            self.object_store,
            self.key_manager,
        ]
        closers = [part.close for part in parts if part is not None]
        if self.identity is not None and self.identity.notifier is not None:
            closers.insert(0, self.identity.notifier.close)
        closers += [db.dispose for db in self.databases.values()]
        failures = []
        for close in closers:
            try:
                await close()
            except Exception as exc:  # noqa: BLE001 - the others are closed anyway
                LOG.exception("closing %s failed", close)
                failures.append(exc)
        if failures:
            raise failures[0]
