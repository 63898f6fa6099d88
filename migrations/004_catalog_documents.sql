-- catwalk: catalog post-data
-- Keys of the API's documents. "documents" is the loader's own step that fills product_docs.

-- step: product_docs_keys after: documents
-- INCLUDE: the fingerprints catwalk-api reads after a publish (002), by an index-only scan.
ALTER TABLE product_docs ADD CONSTRAINT product_docs_pkey PRIMARY KEY (id)
  INCLUDE (fp_detail, fp_styles, fp_related);
CREATE UNIQUE INDEX product_docs_rn_idx ON product_docs (rn);
ANALYZE product_docs;
