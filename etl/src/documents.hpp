#pragma once
// The API's read structure, built by the loader: per product, the exact JSON bodies of
// GET /products (item), /products/:id (detail), /products/:id/styles and /products/:id/related,
// COPYed into product_docs. Building them here, while the rows stream by, costs a fraction of
// aggregating 17 million rows in SQL afterwards.
//
// Each accepted row adds its JSON fragment to a spill file chosen by its product id (photos and
// skus find their product through the style -> product map), so memory stays bounded by one
// partition at a time, whatever the export's order. The loader chooses the partition count from
// the export's size, so that one partition stays about the same size at any scale.
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "catwalk/json.hpp"
#include "table_spec.hpp"
#include "validate.hpp"

namespace catwalk::etl {

// Money as the contract's JSON value: "140" when whole, "99.50" otherwise, or null.
void append_money_json(std::string& out, const std::optional<std::string_view>& money);

// n / d for 32-bit n by one multiplication (d fixed, d >= 1; 0 is taken as 1): the assembly
// divides every fragment's product id by the partition count. Exact for every n.
class StrideDivider {
 public:
  explicit StrideDivider(std::uint32_t d);
  std::uint32_t operator()(std::uint32_t n) const;

 private:
  std::uint64_t m_;
  std::uint32_t d_;
};

class DocumentStore {
 public:
  // Spill files go to a new folder under `temp_root`, removed with the store.
  DocumentStore(const std::string& temp_root, int partitions);
  ~DocumentStore();
  DocumentStore(const DocumentStore&) = delete;
  DocumentStore& operator=(const DocumentStore&) = delete;

  // One writer per file task (not thread-safe itself; writers of different tasks run at once).
  class Writer {
   public:
    Writer(DocumentStore& store, const TableSpec& spec);  // use DocumentStore::writer()
    Writer(const Writer&) = delete;                       // owns its files
    Writer& operator=(const Writer&) = delete;
    // Adds the fragment of a row the validator just accepted (rows are added in export order).
    // Throws InputError when the work file cannot be written (e.g. disk full).
    void add_row(const RowValidator& row);
    void close();  // flushes; throws InputError on a write error (e.g. disk full)
    ~Writer();     // closes files not close()d, quietly (another error is being handled)

   private:
    friend class DocumentStore;
    // Writes the record of the values in scratch_ (documents.cpp says the format).
    void put(std::uint32_t product, std::uint32_t style, std::uint8_t kind);
    void end_value();  // the value appended to scratch_ last ends here
    [[noreturn]] void write_failed(int partition, int err) const;
    struct Close {
      void operator()(std::FILE* f) const { std::fclose(f); }
    };
    DocumentStore& store_;
    const TableSpec& spec_;
    int table_;  // which table's fragments
    // Per column the fragments read (see documents.cpp), its index in the spec's columns.
    std::vector<std::size_t> at_;
    std::vector<std::unique_ptr<std::FILE, Close>> files_;
    // The record being built: kRecordRoom bytes kept for its head, then its values.
    static constexpr std::size_t kRecordRoom = 32;
    std::string scratch_;
    std::string delta_;  // a photo's url before it is written against its thumbnail_url
    std::size_t value_ends_[6] = {};
    int values_ = 0;
  };
  std::unique_ptr<Writer> writer(const TableSpec& spec);

  // Assembles every product's documents and hands them to `sink` as a COPY stream in binary
  // format (header, rows in product_docs column order: id, rn, detail, styles, related,
  // trailer), in chunks of about 1 MiB. `products` are
  // the accepted product ids, already finalize()d (for rn). Returns the number of products.
  // `threads` assemble (and gzip) partitions at once; `sink` is called by one at a time.
  std::uint64_t assemble(const IdSet& products, const std::function<void(const std::string&)>& sink,
                         int threads = 1);

  // Bytes the style -> product map holds (4 per style id up to the largest, more for sparse
  // ids). The assembly no longer needs it and gives it back first: 0 from then on.
  std::size_t style_map_bytes() const;

 private:
  std::string partition_path(int table, int partition) const;
  std::uint32_t product_of_style(std::uint32_t style) const;
  void set_style_product(std::uint32_t style, std::uint32_t product);

  std::string dir_;
  int partitions_;
  // style id -> product id, dense for the ids exports use; written by the styles task only,
  // read by photos and skus tasks after it finished.
  std::vector<std::uint32_t> style_product_;
  std::unordered_map<std::uint32_t, std::uint32_t> style_product_sparse_;
};

}  // namespace catwalk::etl
