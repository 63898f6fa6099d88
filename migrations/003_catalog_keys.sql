-- catwalk: catalog post-data
-- Keys and indexes, built after the COPY (much faster than maintaining them row by row).
-- The loader already rejected duplicates and orphans; these constraints make the database
-- guarantee it too, for every other tool that reads these tables.
-- "-- step: NAME after: A, B" splits a post-data file into steps: a load runs the steps of all
-- post-data files as a graph over its --jobs connections; `migrate` runs them in file order.
-- A step may follow other steps, a table (it starts once that table's file is loaded, while
-- other files still load) or "documents"; a step that names neither waits for every file.
-- Indexes are built with CREATE INDEX (a SHARE lock: the document steps may read meanwhile) and
-- attached as primary keys at the end of the step.
-- The foreign-key columns' indexes hold the column alone, not (column, pos): PostgreSQL then
-- stores each parent id once with the list of its rows (B-tree deduplication), half the size
-- (skus: 118 MB against 242 MB at full scale) and about 1 CPU-second less to build and write
-- to the WAL. Within one parent id the list is in row order, which for these freshly COPYed
-- tables is export (pos) order; a query wanting that order still says ORDER BY pos.

-- Each keys step ends with ANALYZE: the foreign-key steps below need the planner to know that
-- the pages are all-visible (COPY FREEZE), and the tables get statistics. It samples 3,000 rows
-- (statistics target 10) instead of the default 30,000: at full scale the default took 2.4
-- CPU-seconds of a load (5.7 s on its own: skus 2.6, photos 1.8, products 0.9), this about 0.2.
-- Coarser histograms and most-common-value lists are enough for these key lookups; a DBA who
-- wants the default ones runs ANALYZE on the published tables.

-- step: products_keys after: products
CREATE UNIQUE INDEX products_pkey ON products (id);
ALTER TABLE products ADD CONSTRAINT products_pkey PRIMARY KEY USING INDEX products_pkey;
SET LOCAL default_statistics_target = 10;
ANALYZE products;

-- step: styles_keys after: styles
CREATE INDEX styles_product_id_idx ON styles (product_id, id);
CREATE UNIQUE INDEX styles_pkey ON styles (id);
ALTER TABLE styles ADD CONSTRAINT styles_pkey PRIMARY KEY USING INDEX styles_pkey;
SET LOCAL default_statistics_target = 10;
ANALYZE styles;

-- step: features_keys after: features
CREATE INDEX features_product_id_idx ON features (product_id);
CREATE UNIQUE INDEX features_pkey ON features (id);
ALTER TABLE features ADD CONSTRAINT features_pkey PRIMARY KEY USING INDEX features_pkey;
SET LOCAL default_statistics_target = 10;
ANALYZE features;

-- step: related_keys after: related
CREATE INDEX related_product_id_idx ON related (current_product_id);
CREATE UNIQUE INDEX related_pkey ON related (id);
ALTER TABLE related ADD CONSTRAINT related_pkey PRIMARY KEY USING INDEX related_pkey;
SET LOCAL default_statistics_target = 10;
ANALYZE related;

-- step: photos_keys after: photos
CREATE INDEX photos_style_id_idx ON photos (style_id);
CREATE UNIQUE INDEX photos_pkey ON photos (id);
ALTER TABLE photos ADD CONSTRAINT photos_pkey PRIMARY KEY USING INDEX photos_pkey;
SET LOCAL default_statistics_target = 10;
ANALYZE photos;

-- step: skus_keys after: skus
CREATE INDEX skus_style_id_idx ON skus (style_id);
CREATE UNIQUE INDEX skus_pkey ON skus (id);
ALTER TABLE skus ADD CONSTRAINT skus_pkey PRIMARY KEY USING INDEX skus_pkey;
SET LOCAL default_statistics_target = 10;
ANALYZE skus;

-- Foreign keys, one step per child table, each as soon as its two tables have their keys (they
-- ran as one step after every key before, last and alone while a core idled: 4-6 s at full
-- scale). Two steps naming the same table wait for each other's lock in the database.
-- Adding a foreign key makes PostgreSQL check every row (an anti-join of child and parent).
-- Each child column but related_product_id leads an index built above, and COPY FREEZE left
-- every page all-visible, so a merge anti-join of two index-only scans checks a key without
-- reading the child's heap. Without statistics the planner picks a hash join over the whole
-- heap instead: 2.4x slower for skus (3.4 s against 1.4 s at full scale) and 3.6x for photos,
-- whose heap is 1.5 GB. The ANALYZE of each keys step tells the planner that the pages are
-- all-visible; the SET LOCALs end with the step's transaction.

-- step: styles_fkeys after: products_keys, styles_keys
SET LOCAL enable_hashjoin = off;
SET LOCAL enable_nestloop = off;
SET LOCAL enable_seqscan = off;
ALTER TABLE styles   ADD CONSTRAINT styles_product_id_fkey   FOREIGN KEY (product_id) REFERENCES products (id);

-- step: features_fkeys after: products_keys, features_keys
SET LOCAL enable_hashjoin = off;
SET LOCAL enable_nestloop = off;
SET LOCAL enable_seqscan = off;
ALTER TABLE features ADD CONSTRAINT features_product_id_fkey FOREIGN KEY (product_id) REFERENCES products (id);

-- step: photos_fkeys after: styles_keys, photos_keys
SET LOCAL enable_hashjoin = off;
SET LOCAL enable_nestloop = off;
SET LOCAL enable_seqscan = off;
ALTER TABLE photos   ADD CONSTRAINT photos_style_id_fkey     FOREIGN KEY (style_id) REFERENCES styles (id);

-- step: skus_fkeys after: styles_keys, skus_keys
SET LOCAL enable_hashjoin = off;
SET LOCAL enable_nestloop = off;
SET LOCAL enable_seqscan = off;
ALTER TABLE skus     ADD CONSTRAINT skus_style_id_fkey       FOREIGN KEY (style_id) REFERENCES styles (id);

-- step: related_fkeys after: products_keys, related_keys
SET LOCAL enable_hashjoin = off;
SET LOCAL enable_nestloop = off;
SET LOCAL enable_seqscan = off;
ALTER TABLE related  ADD CONSTRAINT related_current_product_id_fkey FOREIGN KEY (current_product_id) REFERENCES products (id);
-- related_product_id has no index: related is read whole (4.5 M narrow rows). Sorting it and
-- merging with products' index-only scan takes 1.4 s at full scale; the hash anti-join the planner
-- picks otherwise takes 3.4 s (4.5 M probes of a 43 MB hash table, each a cache miss). The sort
-- fits in the loader's work_mem (256 MB; it takes 197 MB at full scale).
SET LOCAL enable_seqscan = on;
ALTER TABLE related  ADD CONSTRAINT related_related_product_id_fkey FOREIGN KEY (related_product_id) REFERENCES products (id);
