-- The SQL the music school runs, one statement per request, named for the harness that
-- plays it (tests/examples/test_music_school.py). Parameters are psycopg named placeholders.

-- name: act_as
-- The web app's pool logs in as school_web and acts as school_teacher; the office logs in
-- as school_office (a member of school_staff). A test reaches the same roles from an owner
-- connection (the role name is quoted by the caller).
SET ROLE {};

-- name: sign_in
-- The web app, per request: which teacher is signed in (what school.can_manage_branch reads).
SELECT set_config('school.teacher_id', %(teacher)s::text, false);

-- name: add_branch
INSERT INTO school.branches (name) VALUES (%(name)s) RETURNING id;

-- name: add_student
INSERT INTO school.students (branch_id, full_name) VALUES (%(branch)s, %(name)s) RETURNING id;

-- name: add_teacher
INSERT INTO school.teachers (full_name) VALUES (%(name)s) RETURNING id;

-- name: assign_teacher
INSERT INTO school.teacher_branches (teacher_id, branch_id) VALUES (%(teacher)s, %(branch)s);

-- name: sell_bundle
-- The office sells a bundle of lessons (or a term membership: unlimited, lessons_bought 0).
INSERT INTO school.credit_bundles (student_id, branch_id, lessons_bought, valid_until, is_unlimited)
VALUES (%(student)s, %(branch)s, %(lessons)s, %(valid_until)s, %(unlimited)s) RETURNING id;

-- name: top_up
-- The student buys more lessons on the same bundle.
UPDATE school.credit_bundles SET lessons_bought = lessons_bought + %(lessons)s WHERE id = %(bundle)s;

-- name: refund_bundle
UPDATE school.credit_bundles SET refunded_at = now() WHERE id = %(bundle)s;

-- name: schedule_lesson
INSERT INTO school.lessons (student_id, teacher_id, branch_id, credit_bundle_id, instrument,
                            lesson_start, lesson_end)
VALUES (%(student)s, %(teacher)s, %(branch)s, %(bundle)s, %(instrument)s,
        %(start)s, %(start)s + interval '45 minutes')
RETURNING id;

-- name: mark
-- A teacher's register, or the office: one lesson taught, missed_late_cancel or cancelled.
-- It only sets the state: the ledger takes the lesson from the bundle.
UPDATE school.lessons SET state = %(state)s::school.lesson_state WHERE id = %(lesson)s;

-- name: mark_many
-- The end-of-day register: every listed lesson at once.
UPDATE school.lessons SET state = %(state)s::school.lesson_state WHERE id = ANY (%(lessons)s::bigint[]);

-- name: add_note
UPDATE school.lessons SET notes = %(notes)s WHERE id = %(lesson)s;

-- name: bundle
SELECT lessons_bought, lessons_taken FROM school.credit_bundles WHERE id = %(bundle)s;

-- name: lesson_state
SELECT state::text AS state FROM school.lessons WHERE id = %(lesson)s;

-- name: ledger_state
-- What the ledger holds for a lesson: paid, unfunded (with why) or released.
SELECT state, reason FROM session_ledger.charges WHERE booking_id::text = %(lesson)s::text;
