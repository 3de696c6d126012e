-- The SQL the gym's server runs, one statement per request, named for the harness
-- that plays it (listener/devtools/example_apps.py: `listener demo --app gym` and
-- tests/examples/test_gym.py). Parameters are psycopg named placeholders.

-- name: act_as
-- The server's connection pool logs in as gym_app; a test or the demo reaches the
-- same role from an owner connection (the role name is quoted by the caller).
SET ROLE {};

-- name: add_member
INSERT INTO gym.members (email) VALUES (%(email)s) RETURNING id;

-- name: add_class
INSERT INTO gym.classes (name, starts_at, ends_at)
VALUES (%(name)s, %(starts_at)s, %(ends_at)s) RETURNING id;

-- name: sell_package
INSERT INTO gym.packages (member_id, sessions_remaining, expires_on, is_expired)
VALUES (%(member)s, %(sessions)s, %(expires_on)s, %(is_expired)s) RETURNING id;

-- name: renew_package
UPDATE gym.packages SET sessions_remaining = sessions_remaining + %(sessions)s WHERE id = %(package)s;

-- name: book
INSERT INTO gym.bookings (member_id, class_id, package_id)
VALUES (%(member)s, %(class)s, %(package)s) RETURNING id;

-- name: mark
-- The front desk's tablet: one booking marked attended, no_show or cancelled. It
-- only sets the status: the ledger takes the session.
UPDATE gym.bookings SET status = %(status)s WHERE id = %(booking)s;

-- name: mark_class
-- The coach submits the class's attendance sheet: every listed booking at once.
UPDATE gym.bookings SET status = %(status)s WHERE id = ANY (%(bookings)s::integer[]);

-- name: add_note
UPDATE gym.bookings SET notes = %(notes)s WHERE id = %(booking)s;

-- name: remaining
SELECT sessions_remaining FROM gym.packages WHERE id = %(package)s;

-- name: booking_status
SELECT status FROM gym.bookings WHERE id = %(booking)s;

-- name: booking_rows
SELECT b.id, b.status, b.package_id, c.name AS class_name,
       to_char(c.starts_at, 'Dy DD Mon HH24:MI') AS at
FROM gym.bookings b JOIN gym.classes c ON c.id = b.class_id
WHERE b.id = ANY (%(bookings)s::integer[])
ORDER BY c.starts_at, b.id;

-- name: ledger_state
-- What the ledger holds for a booking: paid, unfunded (with why) or released.
SELECT state, reason FROM session_ledger.charges WHERE booking_id::text = %(booking)s::text;
