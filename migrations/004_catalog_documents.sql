-- catwalk: catalog post-data
-- Keys of the API's documents. "documents" is the loader's own step that fills product_docs.
-- The two indexes are separate steps, so that a load builds them at once on two connections:
-- they are the last work before publishing (0.7-0.8 s each at full scale, mostly reading the
-- 1.2 GB table) and nothing else is left to run beside them. Each takes a SHARE lock, which
-- the other's does not block; the primary key is attached, and the table analyzed, once both
-- are built (attaching takes an ACCESS EXCLUSIVE lock, so it must not wait on the other build).

-- step: product_docs_id_index after: documents
-- INCLUDE: the fingerprints catwalk-api reads after a publish (002), by an index-only scan.
CREATE UNIQUE INDEX product_docs_pkey ON product_docs (id)
  INCLUDE (fp_detail, fp_styles, fp_related);

-- step: product_docs_rn_index after: documents
CREATE UNIQUE INDEX product_docs_rn_idx ON product_docs (rn);

-- step: product_docs_keys after: product_docs_id_index, product_docs_rn_index
ALTER TABLE product_docs ADD CONSTRAINT product_docs_pkey PRIMARY KEY USING INDEX product_docs_pkey;
-- Statistics target 10 as for the catalogue's tables (003): the documents' columns need no
-- histograms, only the planner's page counts (0.03 s instead of 0.4 s at full scale).
SET LOCAL default_statistics_target = 10;
ANALYZE product_docs;
