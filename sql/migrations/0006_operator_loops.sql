-- Unfunded bookings judged again when their pack can newly pay, and the sessions the
-- app's old code gave away kept given away.
--
-- Runs inside one transaction, holding the migration lock, before the repeatable
-- files (sql/functions/*.sql) are re-applied.

-- The pack trigger (sql/functions/45_pack_changes.sql) finds a pack's unfunded
-- bookings by pack.
CREATE INDEX charges_purchase_unfunded_idx ON session_ledger.charges (purchase_id) WHERE state = 'unfunded';

-- Per pack, how many of the bookings adopted as paid the app's old code never
-- charged. Giving back the session of a booking adopted as paid (a cancel, a delete,
-- a move to another pack) first uses this up, and moves the balance only once it is
-- zero. `listener audit --charge` sets it to zero for the packs it judges.
CREATE TABLE session_ledger.given_away (
    purchase_id uuid PRIMARY KEY,
    sessions int NOT NULL CHECK (sessions >= 0),
    recorded int NOT NULL CHECK (recorded >= 0),
    recorded_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE session_ledger.given_away ENABLE ROW LEVEL SECURITY;

-- Adoption judged a pack that could never have paid as if it had: a booking completed
-- after its pack expired, on a refunded or failed pack, on something that is not a
-- pack, or on another organisation's or client's pack was recorded as paid. The app's
-- old use_session refused those too, so they are unfunded, with the reason the
-- listener would give.
UPDATE session_ledger.charges l
   SET state = 'unfunded', reason = w.why, updated_at = now()
  FROM (SELECT l2.booking_id,
               CASE
                   WHEN p.id IS NULL THEN 'pack does not exist'
                   WHEN p.org_id IS DISTINCT FROM b.org_id THEN 'pack belongs to another organisation'
                   WHEN NOT c.allow_shared_packs AND p.client_id IS DISTINCT FROM b.client_id
                       THEN 'pack belongs to another client'
                   WHEN p.sessions_total IS NULL THEN 'purchase is not a session pack'
                   WHEN p.payment_status IN ('refunded', 'failed') THEN 'pack payment ' || p.payment_status
                   WHEN p.expires_at IS NOT NULL AND p.expires_at <= b.start_time THEN 'pack expired before the session'
               END AS why
        FROM session_ledger.charges l2
        CROSS JOIN session_ledger.config c
        JOIN public.bookings b ON b.id = l2.booking_id
        LEFT JOIN public.client_purchases p ON p.id = l2.purchase_id
        WHERE l2.source = 'adoption' AND l2.state = 'paid') AS w
 WHERE l.booking_id = w.booking_id AND w.why IS NOT NULL;

-- The count, per pack, by the rule session_ledger.record_given_away() states: of the
-- bookings adopted as paid that still consume the pack, those the balance does not
-- cover once the sessions the ledger itself charged are counted. On a fresh install
-- that is n - u for a pack with n completed bookings and u sessions used.
INSERT INTO session_ledger.given_away (purchase_id, sessions, recorded)
SELECT x.pack, x.n, x.n
FROM (SELECT p.id AS pack,
             greatest(count(*) FILTER (WHERE l.source IN ('adoption', 'cut-over'))
                      - greatest(p.sessions_used - count(*) FILTER (WHERE l.source IN ('listener', 'audit')), 0),
                      0)::int AS n
      FROM session_ledger.charges l
      CROSS JOIN session_ledger.config c
      JOIN public.bookings b ON b.id = l.booking_id
      JOIN public.client_purchases p ON p.id = l.purchase_id
      WHERE l.state = 'paid'
        AND b.purchase_id = l.purchase_id AND b.status = ANY (c.consuming_statuses)
      GROUP BY p.id, p.sessions_used) AS x
WHERE x.n > 0;

-- Unfunded bookings the listener or an audit judged before this release were never
-- judged again, even once their pack could pay: every one is judged once more now.
INSERT INTO pgmq.q_booking_events (vt, message)
SELECT clock_timestamp(),
       jsonb_build_object('type', 'booking.changed', 'v', 1, 'booking_id', l.booking_id, 'source', 'upgrade')
FROM session_ledger.charges l
JOIN public.bookings b ON b.id = l.booking_id
WHERE l.state = 'unfunded' AND l.source IN ('listener', 'audit')
ORDER BY b.start_time, b.id;
