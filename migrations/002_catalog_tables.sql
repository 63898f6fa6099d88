-- catwalk: catalog pre-data
-- The catalog tables, created bare: every load replays this file into a fresh schema,
-- COPYs into it, then replays the post-data files (keys, indexes, documents) and swaps it in.
-- `pos` is the row's physical line number in its export file: the API returns photos, skus,
-- features and related ids in export order, which is pos order.

CREATE TABLE products (
  id            integer       NOT NULL,
  name          text          NOT NULL,
  slogan        text          NOT NULL,
  description   text          NOT NULL,
  category      text          NOT NULL,
  default_price numeric(14,2) NOT NULL,
  pos           integer       NOT NULL
);

CREATE TABLE features (
  id         integer NOT NULL,
  product_id integer NOT NULL,
  feature    text    NOT NULL,
  value      text,
  pos        integer NOT NULL
);

CREATE TABLE styles (
  id             integer       NOT NULL,
  product_id     integer       NOT NULL,
  name           text          NOT NULL,
  sale_price     numeric(14,2),
  original_price numeric(14,2) NOT NULL,
  default_style  boolean       NOT NULL,
  pos            integer       NOT NULL
);

CREATE TABLE photos (
  id            integer NOT NULL,
  style_id      integer NOT NULL,
  url           text    NOT NULL,
  thumbnail_url text    NOT NULL,
  pos           integer NOT NULL
);

CREATE TABLE skus (
  id       integer NOT NULL,
  style_id integer NOT NULL,
  size     text    NOT NULL,
  quantity integer NOT NULL,
  pos      integer NOT NULL
);

CREATE TABLE related (
  id                 integer NOT NULL,
  current_product_id integer NOT NULL,
  related_product_id integer NOT NULL,
  pos                integer NOT NULL
);

-- cart.csv rows of this load; merged into public.cart when the load is published.
CREATE TABLE cart_import (
  id           bigint  NOT NULL,
  user_session integer NOT NULL,
  product_id   integer NOT NULL,
  active       boolean NOT NULL,
  pos          integer NOT NULL
);

-- The read structure of the API: per product, the exact JSON bodies of GET /products/:id
-- (detail), /products/:id/styles and /products/:id/related. The loader builds
-- them from the rows it accepts, while it streams them, and COPYs them here; a request is then
-- one primary-key lookup. Never jsonb: jsonb reorders keys and loses export order.
-- detail, styles and related are stored as the API sends them to gzip clients: a gzip member
-- of the JSON (or the JSON itself where gzip would not make it smaller; gzip members start
-- with the bytes 1f 8b, JSON with '{' or '['). The API caches these bytes and inflates them
-- for clients that do not accept gzip. A product's entry in GET /products is its detail
-- without the trailing "features": the API cuts it from the detail (rn orders the pages), so it
-- is not stored twice (it was a 289 MB text column at full scale: COPY and WAL of its own).
-- STORAGE EXTERNAL: PostgreSQL must not try to compress them again.
-- fp_*: each document's fingerprint, written by the loader with the row: its stored length
-- (int4, network order), then, when it is a gzip member of more than 64 bytes, its header's
-- bytes 4-7 (where the loader writes the Adler-32 of the JSON) and its last 8 bytes (the CRC-32
-- and length of the JSON), else the whole stored document. (They were generated columns:
-- PostgreSQL spent 0.6-0.75 CPU-s of a full-scale load evaluating them; a test checks the
-- loader's against that expression.) The primary key carries them (INCLUDE,
-- 004), so that catwalk-api, after a publish, reads every fingerprint with an index-only scan of
-- about 70 MB instead of a scan of this 1.2 GB heap, and keeps the documents that match.
CREATE TABLE product_docs (
  id      integer NOT NULL,
  rn      integer NOT NULL,  -- 1-based rank by id: page P of size C is rn in ((P-1)*C, P*C]
  detail  bytea   NOT NULL,
  styles  bytea   NOT NULL,
  related bytea   NOT NULL,
  fp_detail  bytea   NOT NULL,
  fp_styles  bytea   NOT NULL,
  fp_related bytea   NOT NULL
);
ALTER TABLE product_docs
  ALTER COLUMN detail SET STORAGE EXTERNAL,
  ALTER COLUMN styles SET STORAGE EXTERNAL,
  ALTER COLUMN related SET STORAGE EXTERNAL;
