// The shipped training configs: every file under configs/ (the recipes to run) and configs/experiments/ (the runs
// of docs/results.md) loads through the option table and passes its range checks, and every config path that the
// README, docs/ and scripts/ name literally exists, so moving a config without updating its references fails here.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "core/error.h"
#include "test-util.h"
#include "train/options.h"

namespace gsa {
namespace {

namespace fs = std::filesystem;

const fs::path root = test::source_dir();

std::vector<fs::path> config_files() {
  std::vector<fs::path> out;
  for (const auto& e : fs::recursive_directory_iterator(root / "configs"))
    if (e.is_regular_file() && e.path().extension() == ".json") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(ShippedConfigs, EveryConfigLoadsAndValidates) {
  const auto files = config_files();
  ASSERT_GE(files.size(), 10u);
  size_t experiments = 0;
  for (const fs::path& f : files) {
    SCOPED_TRACE(f.string());
    experiments += f.parent_path().filename() == "experiments";
    train_options o;
    EXPECT_NO_THROW(o = load_train_config(f.string()));
    EXPECT_NO_THROW(validate_train_options(o));
  }
  EXPECT_GT(experiments, 0u) << "configs/experiments/ holds the configs of docs/results.md";
  EXPECT_LT(experiments, files.size()) << "configs/ keeps the recipes to run";
}

// `configs/NAME.json` spelled out in a doc or script (not patterns such as configs/tok*-gsa8.json or
// configs/$m.json, which the regular expression does not match).
TEST(ShippedConfigs, EveryConfigNamedInDocsAndScriptsExists) {
  std::vector<fs::path> texts = {root / "README.md"};
  for (const char* dir : {"docs", "scripts"})
    for (const auto& e : fs::directory_iterator(root / dir))
      if (e.is_regular_file() && (e.path().extension() == ".md" || e.path().extension() == ".sh"))
        texts.push_back(e.path());
  const std::regex named(R"(configs/[A-Za-z0-9_./-]+\.json)");
  std::set<std::string> seen;
  for (const fs::path& t : texts) {
    std::ifstream in(t);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    for (std::sregex_iterator it(text.begin(), text.end(), named), end; it != end; ++it) {
      seen.insert(it->str());
      EXPECT_TRUE(fs::is_regular_file(root / it->str())) << t.filename().string() << " names " << it->str();
    }
  }
  EXPECT_TRUE(seen.count("configs/results-gsa8.json")) << "the README's training example";
  EXPECT_TRUE(seen.count("configs/gpu1k-gsa8.json")) << "docs/cuda.md's GPU example";
}

}  // namespace
}  // namespace gsa
