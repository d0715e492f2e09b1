"""Node-id leases of the ZooKeeper registry (``zk_registry``): ``<root>/node-ids/<n>``,
an ephemeral znode holding its owner's name, is held by the process that mints ids
with ``n``. After a session loss the ids are taken again, or the lease moves."""

from __future__ import annotations

import logging
import threading

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from im.adapters.zk_session import ZkSession
from im.adapters.zk_watch import CONNECTION_ERRORS, holding
from im.ports import NodeLease

log = logging.getLogger("im.registry.zk")


class NodeIdLeases:
    """The node ids this process holds under ``path``. Blocking; called from worker
    threads and the healing thread."""

    def __init__(self, zk: ZkSession, path: str) -> None:
        self._zk = zk
        self.path = path
        # The node ids this process holds, each lease with the limit it was taken under;
        # and ids whose claim got no answer (the node may exist in our session though
        # no lease holds it): healing deletes those. _lease_lock makes taking and
        # re-taking ids one at a time.
        self._leases: dict[NodeLease, int] = {}
        self._unsure_ids: set[int] = set()
        self._lease_lock = threading.Lock()

    def lease(self, owner: str, limit: int, deadline: float) -> NodeLease:
        with holding(self._lease_lock, deadline):
            held = {lease.node_id for lease in self._leases}
            lease = NodeLease(self._take_free_id_sync(owner, limit, held, deadline), owner)
            self._leases[lease] = limit
            return lease

    def _take_free_id_sync(self, owner: str, limit: int, held: set[int], deadline: float) -> int:
        """Claim the lowest id in [0, limit) not in ``held`` (ids of our other leases)
        that no other session holds. Called with _lease_lock held."""
        try:
            children = self._zk.request(deadline, self._zk.client.get_children_async, self.path)
        except NoNodeError:
            children = []
        taken = held | {int(child) for child in children if child.isdigit()}
        for node_id in range(limit):
            # The scan is only a hint: another process may create one of these first.
            if node_id in taken:
                continue
            # Unsure until the claim answers: if it does not, healing removes the node
            # should the create have gone through after all.
            self._unsure_ids.add(node_id)
            claimed = self._claim_id_sync(node_id, owner, deadline)
            self._unsure_ids.discard(node_id)
            if claimed:
                return node_id
        raise RuntimeError(f"all {limit} node ids are taken")

    def _claim_id_sync(self, node_id: int, owner: str, deadline: float) -> bool:
        """Create ``node-ids/<node_id>`` in our session; False if another process
        holds it. Never called for an id another lease of ours holds."""
        path = f"{self.path}/{node_id}"
        client = self._zk.client
        for _ in range(5):
            try:
                self._zk.request(
                    deadline,
                    client.create_async,
                    path,
                    owner.encode(),
                    ephemeral=True,
                    makepath=True,
                )
                return True
            except NodeExistsError:
                pass
            try:
                _, stat = self._zk.request(deadline, client.get_async, path)
            except NoNodeError:
                continue  # released meanwhile: try again
            if self._zk.was_ours(stat):
                # Held by a session of ours that we gave up: take it back now rather
                # than move the lease once the server drops that session.
                try:
                    self._zk.request(deadline, client.delete_async, path, version=stat.version)
                except (NoNodeError, BadVersionError):
                    pass  # gone or rewritten meanwhile: look again
                continue
            # Ours only if a create of ours was retried after its reply was lost. Unlike
            # a connector's node, another process's is never taken over: it mints ids
            # with it.
            return self._zk.is_ours(stat)
        return False

    def reclaim(self) -> None:
        """After a (re)connection: hold each lease's id again (moving the lease to a
        free id when another process took its id meanwhile), and delete ids whose claim
        got no answer and that no lease holds."""
        with holding(self._lease_lock, self._zk.deadline()):
            leases = list(self._leases.items())
            held = {lease.node_id for lease, _ in leases}
            lost: list[tuple[NodeLease, int]] = []
            for lease, limit in leases:
                try:
                    if not self._claim_id_sync(lease.node_id, lease.owner, self._zk.deadline()):
                        lost.append((lease, limit))
                except CONNECTION_ERRORS:
                    raise
                except Exception:
                    log.exception("re-taking node id %d of %s failed", lease.node_id, lease.owner)
            for lease, limit in lost:
                self._move_lease_sync(lease, limit, held)
            self._drop_unsure_ids(held)

    def _drop_unsure_ids(self, held: set[int]) -> None:
        for node_id in sorted(self._unsure_ids):
            if node_id not in held:
                path = f"{self.path}/{node_id}"
                try:
                    _, stat = self._zk.request(self._zk.deadline(), self._zk.client.get_async, path)
                    if stat.ephemeralOwner in self._zk.sessions:
                        self._zk.request(
                            self._zk.deadline(),
                            self._zk.client.delete_async,
                            path,
                            version=stat.version,
                        )
                        log.info("released node id %d, claimed by a call that failed", node_id)
                except (NoNodeError, BadVersionError):
                    pass  # gone, or not the node we looked at
            self._unsure_ids.discard(node_id)

    def _move_lease_sync(self, lease: NodeLease, limit: int, held: set[int]) -> None:
        old = lease.node_id
        try:
            new = self._take_free_id_sync(lease.owner, limit, held, self._zk.deadline())
        except CONNECTION_ERRORS:
            raise
        except Exception:
            # Nothing left to move to: this process keeps minting with an id another
            # one holds, so say it loudly; the next healing pass tries again.
            log.exception(
                "node id %d of %s was taken by another process and none is free",
                old,
                lease.owner,
            )
            return
        held.add(new)
        log.warning(
            "node id %d of %s was taken by another process during a ZooKeeper session "
            "loss; moving to %d",
            old,
            lease.owner,
            new,
        )
        try:
            lease.move_to(new)
        except Exception:
            log.exception("a listener of node id lease %s failed", lease.owner)

    def clear(self) -> None:
        """Forget every lease (the session that held them is closed)."""
        with self._lease_lock:
            self._leases.clear()
            self._unsure_ids.clear()
