-- catwalk: catalog post-data
-- Keys and indexes, built after the COPY (much faster than maintaining them row by row).
-- The loader already rejected duplicates and orphans; these constraints make the database
-- guarantee it too, for every other tool that reads these tables.

ALTER TABLE products ADD CONSTRAINT products_pkey PRIMARY KEY (id);
ALTER TABLE styles   ADD CONSTRAINT styles_pkey   PRIMARY KEY (id);
ALTER TABLE features ADD CONSTRAINT features_pkey PRIMARY KEY (id);
ALTER TABLE related  ADD CONSTRAINT related_pkey  PRIMARY KEY (id);
ALTER TABLE photos   ADD CONSTRAINT photos_pkey   PRIMARY KEY (id);
ALTER TABLE skus     ADD CONSTRAINT skus_pkey     PRIMARY KEY (id);

CREATE INDEX styles_product_id_idx   ON styles   (product_id, id);
CREATE INDEX features_product_id_idx ON features (product_id, pos);
CREATE INDEX related_product_id_idx  ON related  (current_product_id, pos);
CREATE INDEX photos_style_id_idx     ON photos   (style_id, pos);
CREATE INDEX skus_style_id_idx       ON skus     (style_id, pos);

ALTER TABLE styles   ADD CONSTRAINT styles_product_id_fkey   FOREIGN KEY (product_id) REFERENCES products (id);
ALTER TABLE features ADD CONSTRAINT features_product_id_fkey FOREIGN KEY (product_id) REFERENCES products (id);
ALTER TABLE related  ADD CONSTRAINT related_current_product_id_fkey FOREIGN KEY (current_product_id) REFERENCES products (id);
ALTER TABLE related  ADD CONSTRAINT related_related_product_id_fkey FOREIGN KEY (related_product_id) REFERENCES products (id);
ALTER TABLE photos   ADD CONSTRAINT photos_style_id_fkey     FOREIGN KEY (style_id) REFERENCES styles (id);
ALTER TABLE skus     ADD CONSTRAINT skus_style_id_fkey       FOREIGN KEY (style_id) REFERENCES styles (id);
