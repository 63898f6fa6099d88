#pragma once
// The closed list of reasons a line is rejected (the export description in the README): part
// of the summary a run reports, so public; the validation that decides them is in etl/src.
#include <string_view>

namespace catwalk::etl {

enum class RejectKind { kColumnCount, kBadValue, kDuplicateId, kOrphan, kEncoding, kLineTooLong };
inline constexpr int kRejectKindCount = 6;
std::string_view reject_kind_name(RejectKind k);  // "column_count", ...

}  // namespace catwalk::etl
