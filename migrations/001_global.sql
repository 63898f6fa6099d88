-- catwalk: global
-- Objects that live outside the swapped catalog schema and survive every reload:
-- the cart (written by the API) and the publish record.

CREATE TABLE IF NOT EXISTS public.cart (
  id           bigserial PRIMARY KEY,
  user_session integer   NOT NULL,
  product_id   integer   NOT NULL,  -- holds a sku id, as in the export
  active       boolean   NOT NULL DEFAULT true
);
CREATE INDEX IF NOT EXISTS cart_session_sku_idx ON public.cart (user_session, product_id);

-- One row; version goes up by one in the transaction that publishes a load.
CREATE TABLE IF NOT EXISTS public.catwalk_publish (
  singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  version      bigint      NOT NULL,
  published_at timestamptz NOT NULL
);
INSERT INTO public.catwalk_publish VALUES (true, 0, now()) ON CONFLICT DO NOTHING;

CREATE SCHEMA IF NOT EXISTS catwalk;

-- Other tools query the tables by their plain names (products, styles, cart, ...).
DO $$ BEGIN
  EXECUTE format('ALTER DATABASE %I SET search_path = catwalk, public', current_database());
END $$;
