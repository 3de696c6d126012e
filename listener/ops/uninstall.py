"""`listener uninstall`: remove the trigger, the ledger and the queues; keep the app's tables and balances."""

from __future__ import annotations

from dataclasses import dataclass, field

from listener.core.db import connect
from listener.core.sql_files import query, uninstall_sql
from listener.errors import DeadLettersUnresolved, EventsWaiting
from listener.ops.guards import refuse_while_listener_runs, relation_exists
from listener.ops.migrate import migration_lock

# Who loses EXECUTE on the restored functions, in the order uninstall.sql revokes it.
REVOKED_FROM = ("PUBLIC", "anon", "authenticated")


@dataclass
class UninstallReport:
    """What an uninstall found and removed, and who may still call the app's restored functions."""

    installed: bool
    dead_letters: int = 0
    restored: tuple[str, ...] = ()
    kept_grants: bool = False
    # Per restored function: PUBLIC or the roles, besides its owner, that may execute it afterwards.
    executors: dict[str, tuple[str, ...]] = field(default_factory=dict)


def uninstall(dsn: str, *, keep_grants: bool = False, force: bool = False) -> UninstallReport:
    """Drop the triggers, the session_ledger schema and both queues, and put back the app's functions.

    The restored functions check nobody, so PUBLIC, anon and authenticated lose EXECUTE on them
    unless keep_grants; unresolved dead letters make it refuse unless force.
    """
    with connect(dsn, autocommit=True, purpose="uninstall") as conn, migration_lock(conn):
        if not relation_exists(conn, "session_ledger.migrations"):
            return UninstallReport(installed=False)
        refuse_while_listener_runs(conn, action="uninstall")
        with conn.transaction():
            conn.execute(query("lock_bookings"))
            # Waiting events are completions nobody has charged yet: dropping them would
            # leave those bookings unpaid with no trace, so they must be handled first.
            depths = conn.execute(query("queue_depths")).fetchone()
            assert depths is not None
            waiting = int(depths["queue_depth"])
            if waiting:
                raise EventsWaiting(
                    f"{waiting} booking event{'s are' if waiting != 1 else ' is'} still waiting: "
                    "run `listener run --drain` first, then uninstall"
                )
            dead = int(depths["dead_letter_depth"])
            if dead and not force:
                # A dead letter is a booking change nobody applied: dropping it is a decision.
                them = "them" if dead != 1 else "it"
                raise DeadLettersUnresolved(
                    f"{dead} dead letter{'s are' if dead != 1 else ' is'} unresolved: redrive {them} "
                    "(`listener replay --dead-letter --all`, then `listener run --drain`), discard "
                    f"{them} (`listener discard --dead-letter --all --reason TEXT`), "
                    f"or pass --force to drop {them} with the ledger"
                )
            restored = (
                tuple(r["signature"] for r in conn.execute(query("replaced_functions")))
                if relation_exists(conn, "session_ledger.replaced_functions")
                else ()
            )
            conn.execute(query("uninstall_keep_grants"), {"keep": "on" if keep_grants else "off"})
            conn.execute(uninstall_sql())
            executors = {
                signature: tuple(
                    r["grantee"]
                    for r in conn.execute(query("uninstall_function_executors"), {"signature": signature})
                )
                for signature in restored
            }
        return UninstallReport(
            installed=True,
            dead_letters=dead,
            restored=restored,
            kept_grants=keep_grants,
            executors=executors,
        )
