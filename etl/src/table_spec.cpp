#include "table_spec.hpp"

#include <algorithm>
#include <stdexcept>

namespace catwalk::etl {

std::vector<std::string> TableSpec::parents() const {
  std::vector<std::string> out;
  for (const auto& c : columns) {
    if (!c.parent.empty() && std::find(out.begin(), out.end(), c.parent) == out.end()) {
      out.push_back(c.parent);
    }
  }
  return out;
}

const std::vector<TableSpec>& table_specs() {
  using T = ColumnType;
  static const std::vector<TableSpec> specs = {
      {"product.csv",
       "products",
       TableRole::kProducts,
       "product",
       "products",
       true,
       {{"id", T::kId},
        {"name", T::kText},
        {"slogan", T::kText},
        {"description", T::kText},
        {"category", T::kText},
        {"default_price", T::kMoney}}},
      {"features.csv",
       "features",
       TableRole::kFeatures,
       "feature",
       "features",
       true,
       {{"id", T::kId},
        {"product_id", T::kRef, "products"},
        {"feature", T::kText},
        {"value", T::kTextOrNull}}},
      {"styles.csv",
       "styles",
       TableRole::kStyles,
       "style",
       "styles",
       true,
       {{"id", T::kId},
        {"product_id", T::kRef, "products"},
        {"name", T::kText},
        {"sale_price", T::kMoneyOrNull},
        {"original_price", T::kMoney},
        {"default_style", T::kBool}}},
      {"photos.csv",
       "photos",
       TableRole::kPhotos,
       "photo",
       "photos",
       true,
       {{"id", T::kId},
        {"style_id", T::kRef, "styles"},
        {"url", T::kText},
        {"thumbnail_url", T::kText}}},
      {"skus.csv",
       "skus",
       TableRole::kSkus,
       "sku",
       "skus",
       true,
       {{"id", T::kId},
        {"style_id", T::kRef, "styles"},
        {"size", T::kText},
        {"quantity", T::kQuantity}}},
      {"related.csv",
       "related",
       TableRole::kRelated,
       "related row",
       "related",
       true,
       {{"id", T::kId},
        {"current_product_id", T::kRef, "products"},
        {"related_product_id", T::kRef, "products"}}},
      {"cart.csv",
       "cart_import",
       TableRole::kCart,
       "cart row",
       "cart",
       false,
       {{"id", T::kBigId},
        {"user_session", T::kPositiveInt},
        {"product_id", T::kPositiveInt},
        {"active", T::kBool}}},
  };
  return specs;
}

std::size_t TableSpec::column_index(std::string_view name) const {
  for (std::size_t i = 0; i < columns.size(); ++i) {
    if (columns[i].name == name) return i;
  }
  return std::string::npos;
}

const TableSpec& spec_of(TableRole role) {
  for (const auto& s : table_specs()) {
    if (s.role == role) return s;
  }
  throw std::logic_error("no table spec for a role");  // every role has one: a bug otherwise
}

const TableSpec* find_spec_by_table(std::string_view table) {
  for (const auto& s : table_specs()) {
    if (s.table == table) return &s;
  }
  return nullptr;
}

}  // namespace catwalk::etl
