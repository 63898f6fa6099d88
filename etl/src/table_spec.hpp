#pragma once
// What each export file holds and how each of its columns is checked: the loader's one
// description of the inputs (the schema itself is in migrations/).
#include <string>
#include <string_view>
#include <vector>

namespace catwalk::etl {

enum class ColumnType {
  kId,           // positive 32-bit integer, unique in its file
  kBigId,        // positive 64-bit integer, unique in its file (cart ids)
  kRef,          // non-negative 32-bit integer naming a row of the parent table
  kPositiveInt,  // positive 32-bit integer, no parent check (cart session, cart sku)
  kQuantity,     // non-negative 32-bit integer
  kMoney,        // decimal, up to 12 integer digits and 2 decimals
  kMoneyOrNull,  // kMoney, or null / empty / 0 meaning "no sale": SQL NULL
  kBool,         // 0, 1, true, false (any case)
  kText,         // any text, kept exactly
  kTextOrNull,   // kText, but unquoted null or an empty field is SQL NULL
};

// What a file is to the loader, so special cases name a role, not a table-name string.
enum class TableRole {
  kProducts,  // the catalogue's root: the product count guards publishing; documents per product
  kFeatures,
  kStyles,
  kPhotos,
  kSkus,
  kRelated,
  kCart,  // merged into public.cart when publishing, not part of the catalogue
};

struct ColumnSpec {
  std::string name;  // normalized header name (see normalize_column_name)
  ColumnType type;
  std::string parent = {};  // for kRef: the table whose ids it references
};

struct TableSpec {
  std::string file;   // "product.csv"
  std::string table;  // "products": the table it is COPYed into, in the staging schema
  TableRole role;
  std::string row_noun;     // one row, as messages name it: "product"
  std::string shown_table;  // the table users see it in (summary): "cart" for cart_import
  bool required = true;
  std::vector<ColumnSpec> columns;  // in COPY order; `pos` is appended by the loader
  std::vector<std::string> parents() const;
  // Index of the column named `name` in `columns`, or npos when it has none.
  std::size_t column_index(std::string_view name) const;
};

// The seven export files, in the order they are listed to users.
const std::vector<TableSpec>& table_specs();
const TableSpec* find_spec_by_table(std::string_view table);
const TableSpec& spec_of(TableRole role);

}  // namespace catwalk::etl
