-- The SQL the marketplace runs: its mobile app's requests as the signed-in user
-- (PostgREST, role authenticated), its payment webhook and cron as service_role.
-- Named for the harness that plays it (listener/devtools/example_apps.py:
-- `listener demo --app marketplace` and tests/examples/test_marketplace.py).

-- name: add_user
INSERT INTO auth.users (id, email, role, aud) VALUES (%(user)s, %(email)s, 'authenticated', 'authenticated');

-- name: open_wallet
-- The signup webhook (service_role): one wallet per user.
INSERT INTO public.credit_wallets (user_id, credits_balance) VALUES (%(user)s, %(credits)s) RETURNING id;

-- name: top_up
-- The payment webhook (service_role) after a credit pack is paid for.
UPDATE public.credit_wallets SET credits_balance = credits_balance + %(credits)s WHERE user_id = %(user)s;

-- name: price_class
-- The platform (service_role) sets what a class costs; bookings made after it cost that.
INSERT INTO public.classes (name, credits) VALUES (%(class_name)s, %(credits)s)
ON CONFLICT (name) DO UPDATE SET credits = excluded.credits;

-- name: book
-- The user books a class, paying with credits or by card. No credits are taken here:
-- the ledger charges the wallet when the booking is completed. The booking costs what
-- its class costs (public.price_booking): the user names no price.
INSERT INTO public.bookings (user_id, class_name, starts_at, ends_at, payment_method)
VALUES (%(user)s, %(class_name)s, %(starts_at)s, %(ends_at)s, %(payment_method)s)
RETURNING id, credits_used;

-- name: reprice
-- Support (service_role) changes what one booking costs: a partial refund, a correction.
UPDATE public.bookings SET credits_used = %(credits_used)s WHERE id = %(booking)s;

-- name: switch_payment
-- Support (service_role) switches how a booking is paid: a card payment that failed, a
-- booking the user asked to pay with credits instead.
UPDATE public.bookings SET payment_method = %(payment_method)s WHERE id = %(booking)s;

-- name: cancel
UPDATE public.bookings SET status = 'cancelled' WHERE id = %(booking)s;

-- name: complete
UPDATE public.bookings SET status = 'completed' WHERE id = %(booking)s;

-- name: reschedule
UPDATE public.bookings SET starts_at = %(starts_at)s, ends_at = %(ends_at)s WHERE id = %(booking)s;

-- name: cron_complete
-- The cron (service_role, or pg_cron as the owner): every confirmed booking that has ended.
SELECT session_ledger.complete_past_bookings() AS completed;

-- name: app_cron_complete
-- The app's own cron, as it ran before the ledger's: the same bulk UPDATE.
UPDATE public.bookings SET status = 'completed' WHERE status = 'confirmed' AND ends_at < now();

-- name: time_passes
-- Not the app's: the tests' and the demo's clock. Sessions booked ahead move into the past.
UPDATE public.bookings SET starts_at = starts_at - %(by)s, ends_at = ends_at - %(by)s
WHERE id = ANY (%(bookings)s::uuid[]);

-- name: credits
SELECT credits_balance FROM public.credit_wallets WHERE user_id = %(user)s;

-- name: wallets
SELECT id, user_id, credits_balance FROM public.credit_wallets ORDER BY user_id;

-- name: booking_status
SELECT status FROM public.bookings WHERE id = %(booking)s;

-- name: booking_rows
SELECT b.id, b.status, b.class_name, b.payment_method, b.credits_used, b.user_id,
       to_char(b.starts_at, 'Dy DD Mon HH24:MI') AS at
FROM public.bookings b
WHERE b.id = ANY (%(bookings)s::uuid[])
ORDER BY b.starts_at, b.id;

-- name: ledger_state
-- What the ledger holds for a booking: paid, unfunded (with why) or released.
SELECT state, reason FROM session_ledger.charges WHERE booking_id::text = %(booking)s::text;

-- name: legacy_book
-- The old app's booking call (examples/marketplace/legacy.sql), before the ledger.
SELECT public.book_class_with_credits(%(class_name)s, %(starts_at)s, %(ends_at)s, %(credits)s) AS id;

-- name: legacy_cancel
SELECT public.cancel_booking_with_refund(%(booking)s);
