-- catwalk: global
-- A cart row holds a quantity, so that a POST /cart costs one row whatever its count says
-- (before, each unit was a row: one 22-byte request with count 1000 stored 1,000 rows).
-- cart.csv lines stay one row each, with the default quantity 1; GET /cart sums quantities.
-- A constant default adds the column without rewriting the table.
ALTER TABLE public.cart
  ADD COLUMN IF NOT EXISTS quantity integer NOT NULL DEFAULT 1
    CONSTRAINT cart_quantity_positive CHECK (quantity > 0);
