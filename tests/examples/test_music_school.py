"""The music school (examples/music_school): plain PostgreSQL, bigint identity keys, an enum
lesson state, branches as the organisation, bundles counted up (lessons_taken of
lessons_bought), term memberships that cost nothing, refunded bundles that pay nothing, and
teachers who may mark only their own branches' lessons. Its schema and mapping installed in a
throwaway database, its writers raced, the listener drained, every balance exact."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict

from listener.core.db import Conn, connect
from listener.core.sql_files import query
from listener.devtools.app_schema import apply_sql_file
from listener.devtools.driver import Ledger
from listener.devtools.example_apps import named_statements
from listener.devtools.throwaway import create_database, drop_database
from listener.mapping import model
from listener.ops.migrate import migrate

from support import ROOT

SCHOOL = ROOT / "examples" / "music_school"
NOW = datetime.now().astimezone()
REFUSED = errors.InsufficientPrivilege
CONSUMING = ("taught", "missed_late_cancel")


class School:
    """The school's two writers: the office (school_office, a member of the trusted
    school_staff) and the teachers' web app (school_web, acting as school_teacher with the
    signed-in teacher's id in school.teacher_id). `dsn` is a superuser connection, which may
    SET ROLE to either login."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.q = named_statements(SCHOOL / "flows.sql")
        self.owner = connect(dsn, purpose="school owner")
        self._office = self._login("school_office")

    def _login(self, role: str, teacher: int | None = None) -> Conn:
        conn = connect(self.dsn, purpose="school")
        conn.execute(sql.SQL(self.q["act_as"]).format(sql.Identifier(role)))
        if teacher is not None:
            conn.execute(self.q["sign_in"], {"teacher": teacher})
        return conn

    @contextmanager
    def office(self) -> Iterator[Conn]:
        """A fresh office connection, for one writer of a race."""
        conn = self._login("school_office")
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def teacher(self, teacher: int | None, *, role: str = "school_web") -> Iterator[Conn]:
        """A fresh web-app connection with this teacher signed in (None: nobody signed in)."""
        conn = self._login(role, teacher)
        try:
            yield conn
        finally:
            conn.close()

    def close(self) -> None:
        """Close the helper's connections."""
        self._office.close()
        self.owner.close()

    def _id(self, name: str, params: dict[str, Any]) -> int:
        row = self._office.execute(self.q[name], params).fetchone()
        assert row is not None
        return int(row["id"])

    # --- the office ---------------------------------------------------------------------
    def branch(self, name: str) -> int:
        """A branch of the school."""
        return self._id("add_branch", {"name": name})

    def student(self, branch: int, name: str) -> int:
        """A student enrolled at a branch."""
        return self._id("add_student", {"branch": branch, "name": name})

    def hire(self, name: str, *branches: int) -> int:
        """A teacher who teaches at these branches."""
        teacher = self._id("add_teacher", {"name": name})
        for branch in branches:
            self._office.execute(self.q["assign_teacher"], {"teacher": teacher, "branch": branch})
        return teacher

    def sell(
        self,
        student: int,
        branch: int,
        lessons: int,
        *,
        valid_until: datetime | None = None,
        unlimited: bool = False,
    ) -> int:
        """A bundle of lessons (or, unlimited, a term membership) sold to a student."""
        return self._id(
            "sell_bundle",
            {
                "student": student,
                "branch": branch,
                "lessons": lessons,
                "valid_until": valid_until,
                "unlimited": unlimited,
            },
        )

    def top_up(self, bundle: int, lessons: int) -> None:
        """More lessons bought on a bundle."""
        self._office.execute(self.q["top_up"], {"bundle": bundle, "lessons": lessons})

    def refund(self, bundle: int) -> None:
        """The bundle is refunded: it pays for no lesson from now on."""
        self._office.execute(self.q["refund_bundle"], {"bundle": bundle})

    def past_lessons(self, student: int, teacher: int, branch: int, bundle: int | None, n: int) -> list[int]:
        """n lessons that took place, a day apart, oldest first."""
        return [
            self._id(
                "schedule_lesson",
                {
                    "student": student,
                    "teacher": teacher,
                    "branch": branch,
                    "bundle": bundle,
                    "instrument": "piano",
                    "start": NOW - timedelta(days=n + 1 - i),
                },
            )
            for i in range(n)
        ]

    # --- anyone's register --------------------------------------------------------------
    def mark(self, lesson: int, state: str, *, conn: Conn | None = None) -> int:
        """One lesson marked; how many rows changed."""
        return (conn or self._office).execute(self.q["mark"], {"state": state, "lesson": lesson}).rowcount

    def mark_many(self, lessons: Sequence[int], state: str, *, conn: Conn | None = None) -> int:
        """The end-of-day register: every listed lesson at once."""
        cur = (conn or self._office).execute(self.q["mark_many"], {"state": state, "lessons": list(lessons)})
        return cur.rowcount

    def note(self, lesson: int, notes: str, *, conn: Conn) -> int:
        """A note on a lesson: nothing the ledger charges."""
        return conn.execute(self.q["add_note"], {"notes": notes, "lesson": lesson}).rowcount

    # --- reading, as the owner ----------------------------------------------------------
    def taken(self, bundle: int) -> int:
        """A bundle's lessons_taken."""
        row = self.owner.execute(self.q["bundle"], {"bundle": bundle}).fetchone()
        assert row is not None
        return int(row["lessons_taken"])

    def state(self, lesson: int) -> str:
        """A lesson's state."""
        row = self.owner.execute(self.q["lesson_state"], {"lesson": lesson}).fetchone()
        assert row is not None
        return str(row["state"])

    def ledger_state(self, lesson: int) -> tuple[str, str | None] | None:
        """The ledger's (state, reason) for a lesson, or None when it holds no row."""
        row = self.owner.execute(self.q["ledger_state"], {"lesson": lesson}).fetchone()
        return None if row is None else (str(row["state"]), row["reason"])

    def drain(self) -> None:
        """Run a listener until the queue is empty."""
        Ledger(self.dsn).drain(listener_running=False)


@pytest.fixture(scope="module")
def school_template(ledger_server: str) -> Iterator[str]:
    """A database with the school's schema and the ledger rendered from its mapping, to clone."""
    dsn = create_database(ledger_server, prefix="school_tmpl")
    try:
        apply_sql_file(dsn, SCHOOL / "schema.sql")
        migrate(dsn, mapping=model.load(SCHOOL / "mapping.toml"))
        yield str(conninfo_to_dict(dsn)["dbname"])
    finally:
        drop_database(ledger_server, dsn)


@pytest.fixture
def school(ledger_server: str, school_template: str) -> Iterator[School]:
    """The school on a fresh clone."""
    dsn = create_database(ledger_server, prefix="school", template=school_template)
    app = School(dsn)
    yield app
    app.close()
    drop_database(ledger_server, dsn)


def race(*writers: Callable[[], object]) -> list[object]:
    """Run the writers at once, each in its own thread, released together; re-raise the first error."""
    start = threading.Barrier(len(writers))

    def run(writer: Callable[[], object]) -> object:
        start.wait()
        return writer()

    with ThreadPoolExecutor(len(writers)) as pool:
        return [f.result() for f in [pool.submit(run, w) for w in writers]]


@pytest.fixture
def north(school: School) -> tuple[int, int, int]:
    """The North branch, its piano teacher Tess, and her student Ana."""
    branch = school.branch("North")
    return branch, school.hire("Tess", branch), school.student(branch, "Ana")


# --- the files --------------------------------------------------------------------------


def test_the_mapping_is_the_music_schools() -> None:
    m = model.load(SCHOOL / "mapping.toml")
    assert (m.booking.table, m.booking.status) == ("school.lessons", "state")
    assert m.booking.consuming_statuses == CONSUMING
    assert (m.booking.start, m.booking.end) == ("lesson_start", "lesson_end")
    assert (m.booking.client, m.booking.org) == ("student_id", "branch_id")
    assert (m.pack.table, m.pack.column) == ("school.credit_bundles", "credit_bundle_id")
    assert (m.pack.used, m.pack.total, m.pack.expires) == ("lessons_taken", "lessons_bought", "valid_until")
    assert m.pack.unlimited_when == "{row}.is_unlimited"
    assert (m.pack.unusable_when, m.pack.unusable_reason) == (
        "{row}.refunded_at IS NOT NULL",
        "'bundle refunded'",
    )
    assert m.access.mode == "supabase"
    assert (m.access.api_roles, m.access.trusted_roles) == (("school_teacher",), ("school_staff",))
    assert m.access.membership_function == "school.can_manage_branch"


# --- charging -----------------------------------------------------------------------------


def test_taught_and_missed_late_cancel_take_a_lesson_and_cancelled_none(
    school: School, north: tuple[int, int, int]
) -> None:
    branch, tess, ana = north
    bundle = school.sell(ana, branch, 10)
    lessons = school.past_lessons(ana, tess, branch, bundle, 4)
    for lesson, state in zip(lessons, ["taught", "taught", "missed_late_cancel", "cancelled"], strict=True):
        assert school.mark(lesson, state) == 1
    school.drain()
    assert school.taken(bundle) == 3
    assert [school.ledger_state(lesson) for lesson in lessons[:3]] == [("paid", None)] * 3
    assert school.ledger_state(lessons[3]) is None


def test_two_teacher_tabs_and_the_office_marking_the_same_lessons_take_one_lesson_each(
    school: School, north: tuple[int, int, int]
) -> None:
    branch, tess, ana = north
    students = [ana, *(school.student(branch, f"s{i}") for i in range(2))]
    bundles = [school.sell(s, branch, 10) for s in students]
    lessons = [
        lesson
        for s, b in zip(students, bundles, strict=True)
        for lesson in school.past_lessons(s, tess, branch, b, 4)
    ]
    with school.teacher(tess) as tab_a, school.teacher(tess) as tab_b, school.office() as office:
        race(
            lambda: [school.mark(lesson, "taught", conn=tab_a) for lesson in lessons],
            lambda: [school.mark(lesson, "taught", conn=tab_b) for lesson in reversed(lessons)],
            lambda: school.mark_many(lessons[::2], "missed_late_cancel", conn=office),
        )
        school.drain()
        # and again once charged: a tab back online, the office's register submitted twice
        race(
            lambda: school.mark_many(lessons, "taught", conn=tab_a),
            lambda: school.mark_many(lessons, "missed_late_cancel", conn=office),
        )
    school.drain()
    assert [school.taken(b) for b in bundles] == [4, 4, 4]
    assert {school.ledger_state(lesson) for lesson in lessons} == {("paid", None)}


def test_the_office_cancelling_while_a_teacher_marks_missed_charges_what_stands(
    school: School, north: tuple[int, int, int]
) -> None:
    branch, tess, ana = north
    bundle = school.sell(ana, branch, 10)
    lessons = school.past_lessons(ana, tess, branch, bundle, 6)
    with school.teacher(tess) as tab, school.office() as office:
        race(
            lambda: [school.mark(lesson, "missed_late_cancel", conn=tab) for lesson in lessons],
            lambda: [school.mark(lesson, "cancelled", conn=office) for lesson in reversed(lessons)],
        )
    school.drain()
    states = [school.state(lesson) for lesson in lessons]
    # whichever write committed last stands; the balance is exactly the lessons that stand consuming
    consuming = [lesson for lesson, s in zip(lessons, states, strict=True) if s in CONSUMING]
    assert school.taken(bundle) == len(consuming)
    for lesson, s in zip(lessons, states, strict=True):
        assert school.ledger_state(lesson) in (
            [("paid", None)] if s in CONSUMING else [None, ("released", None)]
        )
    # then the office settles every one as cancelled: all given back
    school.mark_many(lessons, "cancelled")
    school.drain()
    assert school.taken(bundle) == 0


def test_a_term_membership_charges_nothing(school: School, north: tuple[int, int, int]) -> None:
    branch, tess, ana = north
    term = school.sell(ana, branch, 0, unlimited=True)
    lessons = school.past_lessons(ana, tess, branch, term, 5)
    with school.teacher(tess) as tab:
        assert school.mark_many(lessons, "taught", conn=tab) == 5
    school.drain()
    assert school.taken(term) == 0
    assert {school.ledger_state(lesson) for lesson in lessons} == {("paid", None)}
    school.mark(lessons[0], "cancelled")
    school.drain()
    assert school.taken(term) == 0, "a cancel gives back nothing it never took"


def test_a_refunded_bundle_pays_for_no_lesson_and_says_why(
    school: School, north: tuple[int, int, int]
) -> None:
    branch, tess, ana = north
    bundle = school.sell(ana, branch, 10)
    lessons = school.past_lessons(ana, tess, branch, bundle, 3)
    school.mark(lessons[0], "taught")
    school.drain()
    assert school.taken(bundle) == 1
    school.refund(bundle)
    school.mark_many(lessons[1:], "taught")
    school.drain()
    assert school.taken(bundle) == 1, "the lesson taught before the refund stays paid"
    assert school.ledger_state(lessons[0]) == ("paid", None)
    assert [school.ledger_state(lesson) for lesson in lessons[1:]] == [("unfunded", "bundle refunded")] * 2


def test_an_expired_bundle_pays_for_no_lesson_after_its_date(
    school: School, north: tuple[int, int, int]
) -> None:
    branch, tess, ana = north
    bundle = school.sell(ana, branch, 10, valid_until=NOW - timedelta(days=2, hours=12))
    before, after = school.past_lessons(ana, tess, branch, bundle, 2)  # 3 days and 2 days ago
    school.mark_many([before, after], "taught")
    school.drain()
    assert school.taken(bundle) == 1
    assert school.ledger_state(before) == ("paid", None)
    state = school.ledger_state(after)
    assert state is not None and state[0] == "unfunded" and "expired" in (state[1] or "")


def test_a_top_up_charges_the_lesson_the_bundle_could_not_pay(
    school: School, north: tuple[int, int, int]
) -> None:
    branch, tess, ana = north
    bundle = school.sell(ana, branch, 2)
    lessons = school.past_lessons(ana, tess, branch, bundle, 3)
    assert school.mark_many(list(reversed(lessons)), "taught") == 3
    school.drain()
    assert school.taken(bundle) == 2, "never past lessons_bought (the table's CHECK holds)"
    assert [school.ledger_state(lesson) for lesson in lessons[:2]] == [("paid", None)] * 2
    state = school.ledger_state(lessons[2])
    assert state is not None and state[0] == "unfunded", "the latest lesson is the one left unpaid"
    school.top_up(bundle, 3)
    school.drain()
    assert school.taken(bundle) == 3
    assert school.ledger_state(lessons[2]) == ("paid", None)


def test_a_lesson_cancelled_after_it_was_taught_is_given_back(
    school: School, north: tuple[int, int, int]
) -> None:
    branch, tess, ana = north
    bundle = school.sell(ana, branch, 10)
    [lesson] = school.past_lessons(ana, tess, branch, bundle, 1)
    with school.teacher(tess) as tab:
        school.mark(lesson, "taught", conn=tab)
    school.drain()
    assert school.taken(bundle) == 1
    with school.office() as a, school.office() as b:
        race(
            lambda: school.mark(lesson, "cancelled", conn=a), lambda: school.mark(lesson, "cancelled", conn=b)
        )
    school.drain()
    assert school.taken(bundle) == 0
    assert school.ledger_state(lesson) == ("released", None)
    school.mark(lesson, "missed_late_cancel")
    school.drain()
    assert school.taken(bundle) == 1


def test_a_lesson_of_one_branch_on_another_branchs_bundle_is_unfunded(
    school: School, north: tuple[int, int, int]
) -> None:
    branch, tess, ana = north
    south = school.branch("South")
    school.hire("Uri", south)
    south_bundle = school.sell(ana, south, 10)
    [lesson] = school.past_lessons(ana, tess, branch, south_bundle, 1)
    school.mark(lesson, "taught")
    school.drain()
    assert school.taken(south_bundle) == 0
    assert school.ledger_state(lesson) == ("unfunded", "pack belongs to another organisation")


# --- who may move a lesson ------------------------------------------------------------


def test_a_teacher_of_another_branch_cannot_mark_the_lesson_but_may_note_it(
    school: School, north: tuple[int, int, int]
) -> None:
    branch, tess, ana = north
    uri = school.hire("Uri", school.branch("South"))
    bundle = school.sell(ana, branch, 10)
    [lesson] = school.past_lessons(ana, tess, branch, bundle, 1)
    with school.teacher(uri) as tab:
        for state in CONSUMING:
            with pytest.raises(REFUSED):
                school.mark(lesson, state, conn=tab)
        with pytest.raises(REFUSED):
            school.mark_many([lesson], "taught", conn=tab)
        assert school.note(lesson, "lesson notes: scales", conn=tab) == 1
    with school.teacher(None) as signed_out, pytest.raises(REFUSED):
        school.mark(lesson, "taught", conn=signed_out)
    school.drain()
    assert school.state(lesson) == "scheduled"
    assert school.taken(bundle) == 0
    with school.teacher(tess) as tab:  # the branch's own teacher may
        school.mark(lesson, "taught", conn=tab)
    school.drain()
    assert school.taken(bundle) == 1
    with school.teacher(uri) as tab, pytest.raises(REFUSED):
        school.mark(lesson, "cancelled", conn=tab)
    school.drain()
    assert school.taken(bundle) == 1


def test_a_role_outside_the_signed_in_users_is_refused_even_with_the_tables_grants(
    school: School, north: tuple[int, int, int]
) -> None:
    """The membership function is asked only of members of authenticated: a reporting role with
    UPDATE on the lessons, naming a teacher of the branch, still may not move a lesson."""
    school.owner.execute(
        """DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'school_reports') THEN
                CREATE ROLE school_reports LOGIN;
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END
        $$"""
    )
    school.owner.execute("GRANT USAGE ON SCHEMA school TO school_reports")
    school.owner.execute("GRANT SELECT, UPDATE ON school.lessons, school.credit_bundles TO school_reports")
    school.owner.execute("GRANT EXECUTE ON FUNCTION school.can_manage_branch(bigint) TO school_reports")
    branch, tess, ana = north
    bundle = school.sell(ana, branch, 10)
    [lesson] = school.past_lessons(ana, tess, branch, bundle, 1)
    with school.teacher(tess, role="school_reports") as reports:
        with pytest.raises(REFUSED) as refused:
            school.mark(lesson, "taught", conn=reports)
        assert refused.value.diag.message_hint == (
            "Only signed-in users (members of authenticated) whom school.can_manage_branch admits for the "
            "pack's organisation, school_staff and the ledger's owner may."
        ), "the hint names who is asked the membership function"
        assert school.note(lesson, "exported", conn=reports) == 1
    school.drain()
    assert (school.state(lesson), school.taken(bundle)) == ("scheduled", 0)


# --- the school's own migrations ------------------------------------------------------


def test_a_balance_made_bigint_by_the_schools_migration_still_charges(
    school: School, north: tuple[int, int, int]
) -> None:
    """PostgreSQL refuses to change the type of a column a view reads: the school's migration
    drops the ledger's two views in its own transaction, and `listener migrate` renders them again
    though nothing it recorded changed. A bigint balance is charged as an integer one is."""
    branch, tess, ana = north
    bundle = school.sell(ana, branch, 10)
    [lesson] = school.past_lessons(ana, tess, branch, bundle, 1)
    with pytest.raises(errors.FeatureNotSupported):
        school.owner.execute("ALTER TABLE school.credit_bundles ALTER COLUMN lessons_taken TYPE bigint")
    with school.owner.transaction():
        school.owner.execute("DROP VIEW session_ledger.app_bookings, session_ledger.app_packs")
        school.owner.execute("ALTER TABLE school.credit_bundles ALTER COLUMN lessons_taken TYPE bigint")
    report = migrate(school.dsn)
    assert "05_app.sql" in report.repeatables
    views = ["session_ledger.app_bookings", "session_ledger.app_packs"]
    present = school.owner.execute(query("ledger_tables_present"), {"names": views}).fetchall()
    assert sorted(r["name"] for r in present) == views
    school.mark(lesson, "taught")
    school.drain()
    assert school.taken(bundle) == 1
    assert migrate(school.dsn).repeatables == [], "and once they are there, nothing to do"
