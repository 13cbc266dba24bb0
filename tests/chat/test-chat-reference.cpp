// Every case of tests/data/chat/cases.json rendered by gsa equals what the reference renderer
// (@huggingface/jinja, tests/serve/chat-template/render-cases.mjs) wrote into tests/data/chat/goldens.json —
// or, with $GSA_CHAT_GOLDENS, into a file the live check (chat.reference_live) just rendered.
// Cases on the real Llama 3 / Qwen 3 templates read them from the shared data folder and skip without it.
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "serve/chat-template.h"
#include "test-util.h"

namespace gsa::serve {
namespace {

using ojson = nlohmann::ordered_json;

std::filesystem::path chat_data() { return test::source_dir() / "tests" / "data" / "chat"; }

std::string read_text(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + p.string());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const ojson& cases() {
  static const ojson doc = [] {
    try {
      return ojson::parse(read_text(chat_data() / "cases.json"));
    } catch (const std::exception&) {
      return ojson();  // the load_cases test reports it
    }
  }();
  return doc;
}

std::filesystem::path goldens_path() {
  if (const char* env = std::getenv("GSA_CHAT_GOLDENS")) return env;
  return chat_data() / "goldens.json";
}

const ojson& goldens() {
  static const ojson doc = ojson::parse(read_text(goldens_path()));
  return doc;
}

std::vector<std::string> case_names() {
  std::vector<std::string> names;
  if (cases().contains("cases"))
    for (const auto& c : cases()["cases"]) names.push_back(c["name"].get<std::string>());
  return names;
}

TEST(chat_reference, load_cases) {
  ASSERT_TRUE(cases().contains("cases")) << "cannot read " << (chat_data() / "cases.json");
  EXPECT_GE(cases()["cases"].size(), 60u);
  ASSERT_TRUE(goldens().contains("cases")) << goldens_path();
  for (const auto& c : cases()["cases"])
    EXPECT_TRUE(goldens()["cases"].contains(c["name"].get<std::string>()))
        << c["name"] << " has no golden: rerun render-cases.mjs --out " << goldens_path();
}

class chat_case : public ::testing::TestWithParam<std::string> {};

TEST_P(chat_case, matches_reference) {
  const std::string name = GetParam();
  const ojson* c = nullptr;
  for (const auto& e : cases()["cases"])
    if (e["name"] == name) c = &e;
  ASSERT_NE(c, nullptr);
  const ojson& golden = goldens()["cases"][name];

  // The template's source: inline, a committed file, or a model folder of the shared data.
  std::string source, bos, eos, model_dir;
  if (c->contains("source")) {
    source = (*c)["source"].get<std::string>();
    bos = c->value("bos_token", "");
    eos = c->value("eos_token", "");
  } else {
    const ojson& spec = cases()["templates"][(*c)["template"].get<std::string>()];
    if (spec.contains("shared")) {
      std::filesystem::path dir = test::data_dir() / spec["shared"].get<std::string>();
      if (!std::filesystem::exists(dir / "tokenizer_config.json"))
        GTEST_SKIP() << "needs " << (dir / "tokenizer_config.json") << " (the shared data folder, or set GSA_DATA)";
      model_dir = dir.string();
    } else {
      source = read_text(chat_data() / spec["file"].get<std::string>());
      bos = spec.value("bos_token", "");
      eos = spec.value("eos_token", "");
    }
  }
  ASSERT_FALSE(golden.contains("skipped"))
      << name << ": the goldens were written without " << golden["skipped"]
      << "; rerun render-cases.mjs where the shared data is present";

  std::string got, failure;
  bool failed = false;
  try {
    std::optional<chat_template> t =
        model_dir.empty() ? chat_template::parse(source, bos, eos) : chat_template::from_model_dir(model_dir);
    ASSERT_TRUE(t.has_value()) << model_dir << " has no chat_template";
    got = t->render((*c)["context"]);
  } catch (const error& e) {
    failed = true;
    failure = e.what();
  }
  if (golden.contains("output")) {
    ASSERT_FALSE(failed) << name << ": gsa failed with '" << failure << "', the reference rendered "
                         << golden["output"].dump();
    EXPECT_EQ(got, golden["output"].get<std::string>()) << name;
    return;
  }
  ASSERT_TRUE(golden.contains("error"));
  ASSERT_TRUE(failed) << name << ": the reference failed with '" << golden["error"].get<std::string>()
                      << "', gsa rendered " << ojson(got).dump();
  // raise_exception: the template's own message, word for word. Other failures are worded differently.
  if (c->value("error_kind", "") == "raise") EXPECT_EQ(failure, golden["error"].get<std::string>());
  else EXPECT_NE(failure.find("chat template"), std::string::npos) << failure;
}

std::string param_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string s;
  for (char ch : info.param) s += std::isalnum((unsigned char)ch) ? ch : '_';
  return s;
}

INSTANTIATE_TEST_SUITE_P(all, chat_case, ::testing::ValuesIn(case_names()), param_name);

}  // namespace
}  // namespace gsa::serve
