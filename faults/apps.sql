-- The statements faults/apps.py runs against the example apps' tables that are not the
-- apps' own flows (examples/*/flows.sql): the slow transaction that holds the packs, and
-- the reads the final check makes. Parameters are psycopg named placeholders.

-- name: gym_hold_packages
-- NO KEY UPDATE: blocks the ledger's UPDATE of sessions_remaining, not a booking's
-- foreign-key check (FOR KEY SHARE), so the desk's marks go on while a batch waits.
SELECT id FROM gym.packages WHERE id = ANY (%(packs)s::integer[]) ORDER BY id FOR NO KEY UPDATE;

-- name: gym_packs
SELECT id::text AS pack, sessions_remaining AS remaining FROM gym.packages;

-- name: gym_bookings
-- Every booking with its session's start: "earliest first" is the class's start.
SELECT b.id::text AS booking, b.package_id::text AS pack, b.status, c.starts_at, 1 AS cost,
       b.status IN ('attended', 'no_show') AND b.package_id IS NOT NULL AS consuming
FROM gym.bookings b JOIN gym.classes c ON c.id = b.class_id;

-- name: market_hold_wallets
SELECT id FROM public.credit_wallets WHERE id = ANY (%(packs)s::uuid[]) ORDER BY id FOR NO KEY UPDATE;

-- name: market_packs
SELECT id::text AS pack, user_id::text AS client, credits_balance AS remaining FROM public.credit_wallets;

-- name: market_bookings
-- The wallet that pays a booking is its user's one wallet (the mapping's find = "by_client").
SELECT b.id::text AS booking, w.id::text AS pack, b.status, b.starts_at, b.credits_used AS cost,
       b.status = 'completed' AND b.payment_method = 'credits' AS consuming
FROM public.bookings b JOIN public.credit_wallets w ON w.user_id = b.user_id;

-- name: market_completed_credit_booking
-- One completed credits booking, for support to cancel (a refund).
SELECT id, user_id FROM public.bookings
WHERE status = 'completed' AND payment_method = 'credits'
ORDER BY random() LIMIT 1;

-- name: ledger_charges
SELECT booking_id::text AS booking, purchase_id::text AS pack, state, amount FROM session_ledger.charges;
