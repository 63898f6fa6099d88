-- catwalk: catalog post-data
-- The read structure of the API: one row per product holding the exact JSON bodies of
-- /products (item), /products/:id (detail), /products/:id/styles and /products/:id/related.
-- Built once when a load is published, so a request is one primary-key lookup of text.
-- Stored as text, not jsonb: jsonb reorders keys and loses the export order of skus.
-- The work tables are unlogged and dropped at the end; the steps run in parallel in a load.

-- step: photo_json
CREATE UNLOGGED TABLE photo_json AS
SELECT style_id,
       string_agg('{"thumbnail_url":' || catwalk_json_text(thumbnail_url)
                  || ',"url":' || catwalk_json_text(url) || '}', ',' ORDER BY pos) AS j
FROM photos GROUP BY style_id;

-- step: sku_json
CREATE UNLOGGED TABLE sku_json AS
SELECT style_id,
       string_agg('"' || id || '":{"quantity":' || quantity
                  || ',"size":' || catwalk_json_text(size) || '}', ',' ORDER BY pos) AS j
FROM skus GROUP BY style_id;

-- step: feature_json
CREATE UNLOGGED TABLE feature_json AS
SELECT product_id,
       string_agg('{"feature":' || catwalk_json_text(feature)
                  || ',"value":' || catwalk_json_text(value) || '}', ',' ORDER BY pos) AS j
FROM features GROUP BY product_id;

-- step: related_json
CREATE UNLOGGED TABLE related_json AS
SELECT current_product_id AS product_id,
       string_agg(related_product_id::text, ',' ORDER BY pos) AS j
FROM related GROUP BY current_product_id;

-- step: style_json after: photo_json, sku_json
-- concat() builds each document in one allocation; a chain of || would copy it once per part.
CREATE UNLOGGED TABLE style_json AS
SELECT s.product_id,
       string_agg(concat('{"style_id":', s.id,
         ',"name":', catwalk_json_text(s.name),
         ',"original_price":', catwalk_money_json(s.original_price),
         ',"sale_price":', catwalk_money_json(s.sale_price),
         ',"default?":', s.default_style::text,
         ',"photos":[', coalesce(ph.j, '{"thumbnail_url":null,"url":null}'),
         '],"skus":{', coalesce(sk.j, '"null":{"quantity":null,"size":null}'),
         '}}'), ',' ORDER BY s.id) AS j
FROM styles s
LEFT JOIN photo_json ph ON ph.style_id = s.id
LEFT JOIN sku_json sk ON sk.style_id = s.id
GROUP BY s.product_id;

-- step: product_docs after: style_json, feature_json, related_json
CREATE TABLE product_docs (
  id      integer NOT NULL,
  rn      integer NOT NULL,  -- 1-based rank by id: page P of size C is rn in ((P-1)*C, P*C]
  item    text    NOT NULL,
  detail  text    NOT NULL,
  styles  text    COMPRESSION lz4 NOT NULL,
  related text    NOT NULL
);
INSERT INTO product_docs (id, rn, item, detail, styles, related)
SELECT p.id, p.rn, p.item,
       concat(left(p.item, -1), ',"features":[', f.j, ']}'),
       concat('{"product_id":"', p.id, '","results":[', sd.j, ']}'),
       concat('[', r.j, ']')
FROM (
  SELECT id, row_number() OVER (ORDER BY id)::integer AS rn,
         concat('{"id":', id, ',"name":', catwalk_json_text(name),
                ',"slogan":', catwalk_json_text(slogan),
                ',"description":', catwalk_json_text(description),
                ',"category":', catwalk_json_text(category),
                ',"default_price":', catwalk_money_json(default_price), '}') AS item
  FROM products
) p
LEFT JOIN feature_json f ON f.product_id = p.id
LEFT JOIN style_json sd ON sd.product_id = p.id
LEFT JOIN related_json r ON r.product_id = p.id;
ALTER TABLE product_docs ADD CONSTRAINT product_docs_pkey PRIMARY KEY (id);
CREATE UNIQUE INDEX product_docs_rn_idx ON product_docs (rn);
DROP TABLE photo_json, sku_json, feature_json, related_json, style_json;
ANALYZE product_docs;
