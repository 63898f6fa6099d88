-- catwalk: catalog post-data
-- The read structure of the API: one row per product holding the exact JSON bodies of
-- /products (item), /products/:id (detail), /products/:id/styles and /products/:id/related.
-- Built once when a load is published, so a request is one primary-key lookup of text.
-- Stored as text, not jsonb: jsonb reorders keys and loses the export order of skus.

CREATE TABLE style_docs AS
SELECT s.product_id,
       s.id AS style_id,
       '{"style_id":' || s.id
         || ',"name":' || catwalk_json_text(s.name)
         || ',"original_price":' || catwalk_money_json(s.original_price)
         || ',"sale_price":' || catwalk_money_json(s.sale_price)
         || ',"default?":' || s.default_style::text
         || ',"photos":[' || coalesce(ph.j, '{"thumbnail_url":null,"url":null}')
         || '],"skus":{' || coalesce(sk.j, '"null":{"quantity":null,"size":null}')
         || '}}' AS doc
FROM styles s
LEFT JOIN (
  SELECT style_id,
         string_agg('{"thumbnail_url":' || catwalk_json_text(thumbnail_url)
                    || ',"url":' || catwalk_json_text(url) || '}', ',' ORDER BY pos) AS j
  FROM photos GROUP BY style_id
) ph ON ph.style_id = s.id
LEFT JOIN (
  SELECT style_id,
         string_agg('"' || id || '":{"quantity":' || quantity
                    || ',"size":' || catwalk_json_text(size) || '}', ',' ORDER BY pos) AS j
  FROM skus GROUP BY style_id
) sk ON sk.style_id = s.id;

CREATE TABLE product_docs (
  id      integer PRIMARY KEY,
  rn      integer NOT NULL,  -- 1-based rank by id: page P of size C is rn in ((P-1)*C, P*C]
  item    text    NOT NULL,
  detail  text    NOT NULL,
  styles  text    COMPRESSION lz4 NOT NULL,
  related text    NOT NULL
);

INSERT INTO product_docs (id, rn, item, detail, styles, related)
SELECT p.id, p.rn, p.item,
       left(p.item, -1) || ',"features":[' || coalesce(f.j, '') || ']}',
       '{"product_id":"' || p.id || '","results":[' || coalesce(sd.j, '') || ']}',
       '[' || coalesce(r.j, '') || ']'
FROM (
  SELECT id, row_number() OVER (ORDER BY id)::integer AS rn,
         '{"id":' || id || ',"name":' || catwalk_json_text(name)
           || ',"slogan":' || catwalk_json_text(slogan)
           || ',"description":' || catwalk_json_text(description)
           || ',"category":' || catwalk_json_text(category)
           || ',"default_price":' || catwalk_money_json(default_price) || '}' AS item
  FROM products
) p
LEFT JOIN (
  SELECT product_id, string_agg('{"feature":' || catwalk_json_text(feature)
                                || ',"value":' || catwalk_json_text(value) || '}', ',' ORDER BY pos) AS j
  FROM features GROUP BY product_id
) f ON f.product_id = p.id
LEFT JOIN (
  SELECT product_id, string_agg(doc, ',' ORDER BY style_id) AS j FROM style_docs GROUP BY product_id
) sd ON sd.product_id = p.id
LEFT JOIN (
  SELECT current_product_id, string_agg(related_product_id::text, ',' ORDER BY pos) AS j
  FROM related GROUP BY current_product_id
) r ON r.current_product_id = p.id;

CREATE UNIQUE INDEX product_docs_rn_idx ON product_docs (rn);
DROP TABLE style_docs;
ANALYZE;
