-- The marketplace's old deduction path, as its app called it before the ledger
-- (`supabase.rpc('book_class_with_credits', ...)` from the mobile app): the credits
-- leave the wallet when the class is booked, and cancelling gives them back. Kept here
-- to show what the ledger replaces; never loaded beside it (the mapping has no
-- [legacy] section: this function moves credits by amount and finds the wallet by
-- user, which the ledger's absorption of old calls does not cover). The app drops it
-- in the release that installs the ledger, and books with a plain INSERT instead.
--
-- What goes wrong with it:
--   * the credits are gone for classes that never happen (the studio cancels, the
--     user is a no-show the studio waives) until someone refunds by hand;
--   * cancelling twice (a retried request) refunds twice: nothing records that the
--     booking's credits already went back;
--   * an admin who completes or cancels a booking from the dashboard goes around it.

CREATE OR REPLACE FUNCTION public.book_class_with_credits(
    p_class_name text, p_starts_at timestamptz, p_ends_at timestamptz, p_credits integer
) RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_user uuid := auth.uid();
    v_booking uuid;
BEGIN
    IF v_user IS NULL THEN
        RAISE EXCEPTION 'sign in to book' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE public.credit_wallets SET credits_balance = credits_balance - p_credits
     WHERE user_id = v_user AND credits_balance >= p_credits;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'not enough credits' USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO public.bookings (user_id, class_name, starts_at, ends_at, payment_method, credits_used)
    VALUES (v_user, p_class_name, p_starts_at, p_ends_at, 'credits', p_credits)
    RETURNING id INTO v_booking;
    RETURN v_booking;
END
$$;

CREATE OR REPLACE FUNCTION public.cancel_booking_with_refund(p_booking uuid) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_user uuid;
    v_credits integer;
BEGIN
    UPDATE public.bookings SET status = 'cancelled'
     WHERE id = p_booking AND user_id = auth.uid() AND payment_method = 'credits'
    RETURNING user_id, credits_used INTO v_user, v_credits;
    IF FOUND THEN
        UPDATE public.credit_wallets SET credits_balance = credits_balance + v_credits WHERE user_id = v_user;
    END IF;
END
$$;

ALTER FUNCTION public.book_class_with_credits(text, timestamptz, timestamptz, integer) OWNER TO postgres;
ALTER FUNCTION public.cancel_booking_with_refund(uuid) OWNER TO postgres;
REVOKE ALL ON FUNCTION public.book_class_with_credits(text, timestamptz, timestamptz, integer) FROM PUBLIC, anon;
REVOKE ALL ON FUNCTION public.cancel_booking_with_refund(uuid) FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION public.book_class_with_credits(text, timestamptz, timestamptz, integer) TO authenticated;
GRANT EXECUTE ON FUNCTION public.cancel_booking_with_refund(uuid) TO authenticated;
