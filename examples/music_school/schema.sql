-- A music school on plain PostgreSQL: branches, students, teachers, lessons and the
-- credit bundles students buy. Teachers sign in to the school's web app, whose pool
-- logs in as school_web and acts as school_teacher with the teacher's id in the
-- setting school.teacher_id; the office and the nightly jobs log in as members of
-- school_staff, which may do anything.

CREATE SCHEMA IF NOT EXISTS school;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'school_staff') THEN
        CREATE ROLE school_staff NOLOGIN;
    END IF;
    -- The ledger asks its membership function (school.can_manage_branch) only of members
    -- of a role named authenticated, the signed-in users' role in PostgREST's and
    -- Supabase's convention: the teachers' role is one.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'school_teacher') THEN
        CREATE ROLE school_teacher NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'school_office') THEN
        CREATE ROLE school_office LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'school_web') THEN
        CREATE ROLE school_web LOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    -- another database on the same server created them first: roles are cluster-wide
    NULL;
END
$$;

-- Outside the block: roles are cluster-wide, and one made by an earlier database on the
-- same server is still made a member (granting it again only notices).
GRANT authenticated TO school_teacher;
GRANT school_staff TO school_office;
GRANT school_teacher TO school_web;

CREATE TYPE school.lesson_state AS ENUM ('scheduled', 'taught', 'missed_late_cancel', 'cancelled');

CREATE TABLE school.branches (
    id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE
);

CREATE TABLE school.students (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    branch_id bigint NOT NULL REFERENCES school.branches (id),
    full_name text   NOT NULL
);

CREATE TABLE school.teachers (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    full_name text NOT NULL
);

-- Which branches a teacher teaches at (and so may mark lessons for).
CREATE TABLE school.teacher_branches (
    teacher_id bigint NOT NULL REFERENCES school.teachers (id),
    branch_id  bigint NOT NULL REFERENCES school.branches (id),
    PRIMARY KEY (teacher_id, branch_id)
);

-- A bundle of lessons a student bought at a branch. A term membership is unlimited
-- (is_unlimited; lessons_bought 0): its lessons cost nothing. A refunded bundle
-- (refunded_at set) pays for no lesson. A top-up raises lessons_bought.
CREATE TABLE school.credit_bundles (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    student_id     bigint      NOT NULL REFERENCES school.students (id),
    branch_id      bigint      NOT NULL REFERENCES school.branches (id),
    lessons_bought integer     NOT NULL CHECK (lessons_bought >= 0),
    lessons_taken  integer     NOT NULL DEFAULT 0,
    valid_until    timestamptz,
    refunded_at    timestamptz,
    is_unlimited   boolean     NOT NULL DEFAULT false,
    sold_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT lessons_taken_within_bought CHECK (lessons_taken BETWEEN 0 AND lessons_bought)
);

CREATE TABLE school.lessons (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    student_id       bigint              NOT NULL REFERENCES school.students (id),
    teacher_id       bigint              NOT NULL REFERENCES school.teachers (id),
    branch_id        bigint              NOT NULL REFERENCES school.branches (id),
    credit_bundle_id bigint              REFERENCES school.credit_bundles (id),
    instrument       text                NOT NULL,
    lesson_start     timestamptz         NOT NULL,
    lesson_end       timestamptz         NOT NULL,
    state            school.lesson_state NOT NULL DEFAULT 'scheduled',
    notes            text,
    CHECK (lesson_end > lesson_start)
);

CREATE INDEX lessons_credit_bundle_id_idx ON school.lessons (credit_bundle_id);

-- May the signed-in teacher (school.teacher_id, set by the web app per request) manage
-- this branch's lessons? Staff connections never set it and are trusted anyway.
CREATE FUNCTION school.can_manage_branch(p_branch_id bigint) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1
        FROM school.teacher_branches tb
        WHERE tb.branch_id = p_branch_id
          AND tb.teacher_id = nullif(current_setting('school.teacher_id', true), '')::bigint
    )
$$;

REVOKE ALL ON FUNCTION school.can_manage_branch(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION school.can_manage_branch(bigint) TO school_teacher, school_staff;

GRANT USAGE ON SCHEMA school TO school_staff, school_teacher;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA school TO school_staff;
-- Teachers read the timetable and bundles, and mark their lessons (state, notes).
GRANT SELECT ON ALL TABLES IN SCHEMA school TO school_teacher;
GRANT UPDATE (state, notes) ON school.lessons TO school_teacher;
