// The qa task: a question from a QA jsonl whose golden passage(s) sit at the requested depth among
// distractor passages drawn from the file's other records, numbered "Document i". Accepted lines:
//   {"question"|"input": str, "answers": [str] | "answer": str,
//    "context": str | "passages": [str | {"title"?, "text"|"paragraph_text"|"content", "is_supporting"?}]}
// Passages marked is_supporting are golden (all of a record's passages when none is marked); the rest
// join the distractor pool.
#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/json-util.h"
#include "eval/task-parts.h"
#include "eval/text-util.h"

namespace gsa::eval::detail {

namespace {

using json = nlohmann::json;

std::string passage_text(const json& p, const std::string& where) {
  if (p.is_string()) return p.get<std::string>();
  if (!p.is_object()) fail("{}: each passage must be a string or an object with 'text'", where);
  std::string text;
  for (const char* f : {"text", "paragraph_text", "content"})
    if (auto it = p.find(f); it != p.end() && it->is_string()) {
      text = it->get<std::string>();
      break;
    }
  if (text.empty()) fail("{}: a passage object has no 'text' (or 'paragraph_text' / 'content') string", where);
  if (auto t = p.find("title"); t != p.end() && t->is_string() && !t->get<std::string>().empty())
    return fmt::format("Title: {}\n{}", t->get<std::string>(), text);
  return text;
}

// Whether a passage of a record is golden: is_supporting, when present, must be a boolean.
bool supporting(const json& p, const std::string& where) {
  if (!p.is_object()) return false;
  auto it = p.find("is_supporting");
  if (it == p.end() || it->is_null()) return false;
  if (!it->is_boolean()) fail("{}: field 'is_supporting' of a passage must be true or false, got {}", where,
                              it->type_name());
  return it->get<bool>();
}

qa_record parse_qa(std::string_view line, const std::string& where) {
  if (size_t bad = find_invalid_utf8(line); bad != std::string::npos)
    fail("{}: invalid UTF-8 at byte {} of the line (0x{:02X}); QA files are UTF-8 text", where, bad,
         unsigned(uint8_t(line[bad])));
  const json j = parse_json(line, where);
  if (!j.is_object()) fail("{}: not a JSON object (one QA record per line)", where);
  qa_record r;
  for (const char* f : {"question", "input"})
    if (auto it = j.find(f); it != j.end() && it->is_string()) {
      r.question = it->get<std::string>();
      break;
    }
  if (r.question.empty()) fail("{}: missing field 'question' (or 'input'), a string", where);
  if (auto it = j.find("answers"); it != j.end()) {
    if (!it->is_array()) fail("{}: field 'answers' must be an array of strings", where);
    for (auto& a : *it) {
      if (!a.is_string()) fail("{}: field 'answers' must hold strings only", where);
      r.answers.push_back(a.get<std::string>());
    }
  } else if (auto a = j.find("answer"); a != j.end() && a->is_string()) {
    r.answers.push_back(a->get<std::string>());
  }
  if (r.answers.empty()) fail("{}: missing field 'answers' (an array of strings) or 'answer' (a string)", where);
  for (const auto& a : r.answers)
    if (strip_ws(a).empty()) fail("{}: an answer is blank; every answer needs text", where);
  if (auto c = j.find("context"); c != j.end() && c->is_string()) {
    r.golden.push_back(c->get<std::string>());
  } else if (auto ps = j.find("passages"); ps != j.end() && ps->is_array() && !ps->empty()) {
    bool marked = false;
    for (auto& p : *ps) marked |= supporting(p, where);
    for (auto& p : *ps) {
      bool gold = !marked || supporting(p, where);
      (gold ? r.golden : r.others).push_back(passage_text(p, where));
    }
  } else {
    fail("{}: missing field 'context' (a string) or 'passages' (a non-empty array)", where);
  }
  // A blank passage is no document, and as filler it would add no tokens to the context.
  for (const auto* list : {&r.golden, &r.others})
    for (const auto& t : *list)
      if (strip_ws(t).empty()) fail("{}: a passage (or the context) is blank; every passage needs text", where);
  return r;
}

const std::vector<qa_record>& load_qa(const std::string& file) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<std::vector<qa_record>>> cache;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = cache.find(file); it != cache.end()) return *it->second;
  std::ifstream in(file, std::ios::binary);
  if (!in) fail("cannot open QA file '{}': pass --qa-jsonl FILE, a jsonl of {{question, answers, context}}", file);
  std::stringstream text;
  text << in.rdbuf();
  auto recs = std::make_unique<std::vector<qa_record>>(parse_qa_jsonl(text.str(), file));
  return *cache.emplace(file, std::move(recs)).first->second;
}

}  // namespace

std::vector<qa_record> parse_qa_jsonl(std::string_view text, const std::string& source) {
  std::vector<qa_record> recs;
  int64_t n = 1;
  for (size_t pos = 0; pos < text.size(); n++) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (!strip_ws(line).empty()) recs.push_back(parse_qa(line, fmt::format("{}:{}", source, n)));
  }
  if (recs.empty()) fail("QA file '{}' holds no records", source);
  return recs;
}

sample gen_qa(const task_params& p, const token_counter& count) {
  if (p.qa_jsonl.empty())
    fail("task qa needs a QA file: pass --qa-jsonl FILE (a jsonl of {{question, answers, context or passages}})");
  return gen_qa_from(load_qa(p.qa_jsonl), p, count, p.qa_jsonl);
}

sample gen_qa_from(const std::vector<qa_record>& recs, const task_params& p, const token_counter& count,
                   const std::string& source) {
  GSA_ASSERT(!recs.empty());
  rng r(stream_seed(p.seed, 1, 0));
  const qa_record& rec = recs[r.below(recs.size())];
  std::set<std::string> gold(rec.golden.begin(), rec.golden.end());
  std::vector<std::string> pool;
  std::set<std::string> seen;
  auto add = [&](const std::string& t) {
    if (!gold.count(t) && seen.insert(t).second) pool.push_back(t);
  };
  for (auto& q : recs) {
    if (&q != &rec)
      for (auto& t : q.golden) add(t);
    for (auto& t : q.others) add(t);
  }
  if (pool.empty())
    fail("task qa: '{}' has no distractor passages (it needs more than one record or non-supporting passages)",
         source);
  for (size_t i = pool.size(); i > 1; i--) std::swap(pool[i - 1], pool[r.below(i)]);

  context_plan plan;
  plan.head = "Answer the question based on the given documents. Only give me the answer and do not output "
              "any other words.\n\nThe following are given documents.\n\n";
  plan.sep = "\n\n";
  plan.unit = [pool = std::move(pool)](size_t i) { return pool[i % pool.size()]; };
  plan.decorate = [](size_t i, const std::string& t) { return fmt::format("Document {}:\n{}", i, t); };
  for (auto& g : rec.golden) {
    plan.needles.push_back(g);
    plan.depths.push_back(p.depth);
  }
  built_context c = build_context(plan, p.length_tokens, count, p.task);
  sample s;
  s.task = p.task;
  s.context = std::move(c.context);
  s.context_tokens = c.tokens;
  s.target_tokens = p.length_tokens;
  s.depth_percent = int(std::lround(p.depth * 100));
  s.question = rec.question;
  s.answers = rec.answers;
  return s;
}

}  // namespace gsa::eval::detail
