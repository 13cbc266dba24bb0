// The chat-template renderer's own contract: the interface the server calls, errors that name the line, and the
// bounds that keep an untrusted template from exhausting the stack, memory or time. (Rendering itself is
// compared with the reference renderer in test-chat-reference.cpp.)
#include <fstream>

#include "core/error.h"
#include "serve/chat-template.h"
#include "test-util.h"

namespace gsa::serve {
namespace {

// The gsa::error message of rendering source (parse included); "" when it renders.
std::string error_of(const std::string& source, const nlohmann::ordered_json& context = nlohmann::ordered_json::object(),
                     chat_template_limits limits = {}) {
  try {
    chat_template t = chat_template::parse(source);
    t.limits = limits;
    t.render(context);
  } catch (const error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR_HAS(msg, part) EXPECT_NE((msg).find(part), std::string::npos) << "message: " << (msg)

TEST(chat_template, renders_messages_and_generation_prompt) {
  auto t = chat_template::parse(
      "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}"
      "{% if add_generation_prompt %}<assistant>{% endif %}",
      "<s>", "</s>");
  std::vector<chat_message> msgs = {{"system", "Be brief."}, {"user", "Hi ☃"}};
  EXPECT_EQ(t.render(msgs, true), "<s><system>Be brief.</s><user>Hi ☃</s><assistant>");
  EXPECT_EQ(t.render(msgs, false), "<s><system>Be brief.</s><user>Hi ☃</s>");
  // The JSON form with the same variables gives the same text.
  nlohmann::ordered_json ctx = {{"messages", {{{"role", "system"}, {"content", "Be brief."}},
                                              {{"role", "user"}, {"content", "Hi ☃"}}}},
                                {"add_generation_prompt", true}};
  EXPECT_EQ(t.render(ctx), t.render(msgs, true));
}

TEST(chat_template, empty_special_tokens_are_undefined) {
  auto t = chat_template::parse("{{ bos_token is defined }}{{ eos_token is defined }}", "", "<eos>");
  EXPECT_EQ(t.render({}, false), "falsetrue");
}

TEST(chat_template, extra_variables) {
  auto t = chat_template::parse(
      "{% if enable_thinking is defined and enable_thinking is false %}no-think{% endif %}{{ date_string }}");
  EXPECT_EQ(t.render(nlohmann::ordered_json{{"enable_thinking", false}, {"date_string", "1 May 2025"}}),
            "no-think1 May 2025");
  EXPECT_EQ(t.render(nlohmann::ordered_json::object()), "");
}

TEST(chat_template, raise_exception_gives_the_templates_message) {
  EXPECT_EQ(error_of("{% if messages[0].role != 'user' %}{{ raise_exception('First must be user') }}{% endif %}",
                     {{"messages", {{{"role", "assistant"}, {"content", "x"}}}}}),
            "First must be user");
}

TEST(chat_template, syntax_errors_name_the_line) {
  EXPECT_ERROR_HAS(error_of("line one\n{% if x %}\nno end"), "line 2");
  EXPECT_ERROR_HAS(error_of("line one\n{% if x %}\nno end"), "never closed");
  EXPECT_ERROR_HAS(error_of("a\nb\n{% endfor %}"), "line 3: '{% endfor %}' without the block");
  EXPECT_ERROR_HAS(error_of("{% while x %}{% endwhile %}"), "unknown statement '{% while %}'");
  EXPECT_ERROR_HAS(error_of("{{ 'abc }}"), "string literal is not closed");
  EXPECT_ERROR_HAS(error_of("{{ a $ b }}"), "unexpected character '$'");
  EXPECT_ERROR_HAS(error_of("{{ a b }}"), "expected '}}'");
  EXPECT_ERROR_HAS(error_of("{{ x[] }}"), "index or a slice");
  EXPECT_ERROR_HAS(error_of("{{ 'a\\q' }}"), "unknown escape");
  EXPECT_ERROR_HAS(error_of("{# unclosed"), "comment");
  EXPECT_ERROR_HAS(error_of("{{ f(a=1, 2) }}"), "positional argument after a keyword");
  // trim_blocks removes newlines before the lexer runs: lines still count in the original text.
  EXPECT_ERROR_HAS(error_of("{% set a = 1 %}\n{% set b = 2 %}\n\n{{ a | nosuch }}"), "line 4");
}

TEST(chat_template, runtime_errors_name_what_and_where) {
  std::string msg = error_of("ok\n{{ 'a' | frobnicate }}");
  EXPECT_ERROR_HAS(msg, "line 2");
  EXPECT_ERROR_HAS(msg, "unknown filter 'frobnicate' for a string");
  EXPECT_ERROR_HAS(error_of("{{ 1 is frobnicated }}"), "unknown test 'frobnicated'");
  EXPECT_ERROR_HAS(error_of("{{ x ~ 'a' }}"), "undefined");
  EXPECT_ERROR_HAS(error_of("{% for c in 'abc' %}{% endfor %}"), "'for' needs a list or a dict, got a string");
  EXPECT_ERROR_HAS(error_of("{% break %}"), "outside a loop");
  EXPECT_ERROR_HAS(error_of("{% set x.y = 1 %}", {{"x", {{"y", 0}}}}), "namespace");
  EXPECT_ERROR_HAS(error_of("{{ range }}"), "function cannot be printed");
  EXPECT_ERROR_HAS(error_of("{% set ns = namespace() %}{% macro keep() %}{% set ns.c = caller %}{% endmacro %}"
                            "{% for i in [1] %}{% call keep() %}x{% endcall %}{% endfor %}{{ ns.c() }}"),
                   "caller() called after its call block ended");
}

TEST(chat_template, context_cannot_replace_builtins) {
  EXPECT_ERROR_HAS(error_of("{{ 1 }}", {{"raise_exception", 1}}), "built-in");
}

TEST(chat_template, deep_nesting_is_refused_before_the_stack_overflows) {
  std::string parens = "{{ " + std::string(100000, '(') + "1" + std::string(100000, ')') + " }}";
  EXPECT_ERROR_HAS(error_of(parens), "nested more than");
  std::string blocks;
  for (int i = 0; i < 10000; i++) blocks += "{% if true %}";
  EXPECT_ERROR_HAS(error_of(blocks), "nested more than");
  std::string nots = "{{ " + std::string(50000 * 4, ' ') + " }}";
  for (int i = 0; i < 50000; i++) nots.replace(3 + 4 * i, 4, "not ");
  EXPECT_ERROR_HAS(error_of(nots + "1 }}"), "nested more than");
  // Left-deep chains are built by loops, not recursion: their height is bounded separately.
  std::string chain = "{{ x";
  for (int i = 0; i < 100000; i++) chain += ".a";
  EXPECT_ERROR_HAS(error_of(chain + " }}"), "deeper than");
  std::string sum = "{{ 1";
  for (int i = 0; i < 100000; i++) sum += "+1";
  EXPECT_ERROR_HAS(error_of(sum + " }}"), "deeper than");
  // Nesting within the bounds renders.
  EXPECT_EQ(chat_template::parse("{{ " + std::string(50, '(') + "7" + std::string(50, ')') + " }}").render({}, false),
            "7");
}

TEST(chat_template, macro_recursion_is_bounded) {
  EXPECT_ERROR_HAS(error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"), "a macro calling itself");
}

TEST(chat_template, steps_are_bounded) {
  chat_template_limits few_steps;
  few_steps.max_steps = 100000;
  EXPECT_ERROR_HAS(error_of("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
                            nlohmann::ordered_json::object(), few_steps),
                   "100000 evaluation steps");
  EXPECT_EQ(error_of("{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}",
                     nlohmann::ordered_json::object(), few_steps), "");
}

TEST(chat_template, string_and_list_sizes_are_bounded) {
  chat_template_limits lim;
  lim.max_output = 1 << 20;
  lim.max_items = 10000;
  auto empty = nlohmann::ordered_json::object();
  EXPECT_ERROR_HAS(error_of("{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(64) %}"
                            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}", empty, lim),
                   "exceed 1048576 bytes");
  EXPECT_ERROR_HAS(error_of("{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}"
                            "{% endfor %}", empty, lim),
                   "at most 10000");
  EXPECT_ERROR_HAS(error_of("{{ range(100000000000) | length }}"), "range()");
  EXPECT_ERROR_HAS(error_of("{{ 'a b ' * 3 }}"), "'*' is not defined between a string and an integer");
  EXPECT_ERROR_HAS(error_of("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}"), "contain itself");
  chat_template_limits small;
  small.max_output = 1000;
  EXPECT_ERROR_HAS(error_of("{% for i in range(300) %}hello{% endfor %}", nlohmann::ordered_json::object(), small), "1000 bytes");
  EXPECT_EQ(error_of("{% for i in range(100) %}hello{% endfor %}", nlohmann::ordered_json::object(), small), "");
}

TEST(chat_template, template_size_is_bounded) {
  EXPECT_ERROR_HAS(error_of(std::string(5u << 20, 'x')), "bytes");
}

class model_dir : public ::testing::Test {
 protected:
  std::filesystem::path dir = std::filesystem::temp_directory_path() / ("gsa-chat-" + std::to_string(::getpid()));
  void SetUp() override { std::filesystem::create_directories(dir); }
  void TearDown() override { std::filesystem::remove_all(dir); }
  void write(const std::string& text) { std::ofstream(dir / "tokenizer_config.json") << text; }
};

TEST_F(model_dir, absent_file_or_key_is_nullopt) {
  EXPECT_FALSE(chat_template::from_model_dir(dir.string()).has_value());
  write(R"({"bos_token": "<s>"})");
  EXPECT_FALSE(chat_template::from_model_dir(dir.string()).has_value());
  write(R"({"chat_template": null})");
  EXPECT_FALSE(chat_template::from_model_dir(dir.string()).has_value());
}

TEST_F(model_dir, special_tokens_as_strings_or_objects) {
  write(R"({"chat_template": "{{ bos_token }}|{{ eos_token }}", "bos_token": {"content": "<s>", "lstrip": false},
            "eos_token": "</s>"})");
  auto t = chat_template::from_model_dir(dir.string());
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->bos_token(), "<s>");
  EXPECT_EQ(t->render({}, false), "<s>|</s>");
  write(R"({"chat_template": "{{ bos_token is defined }}", "bos_token": null})");
  EXPECT_EQ(chat_template::from_model_dir(dir.string())->render({}, false), "false");
}

TEST_F(model_dir, named_template_list_takes_default) {
  write(R"({"chat_template": [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "plain"}]})");
  EXPECT_EQ(chat_template::from_model_dir(dir.string())->render({}, false), "plain");
}

TEST_F(model_dir, malformed_files_name_the_file) {
  write("{\"chat_template\": ");
  try {
    chat_template::from_model_dir(dir.string());
    FAIL() << "accepted truncated JSON";
  } catch (const error& e) {
    EXPECT_ERROR_HAS(std::string(e.what()), "tokenizer_config.json");
  }
  write(R"({"chat_template": 5})");
  EXPECT_THROW(chat_template::from_model_dir(dir.string()), error);
  write(R"({"chat_template": "{% if %}"})");
  try {
    chat_template::from_model_dir(dir.string());
    FAIL() << "accepted a broken template";
  } catch (const error& e) {
    EXPECT_ERROR_HAS(std::string(e.what()), "tokenizer_config.json");
    EXPECT_ERROR_HAS(std::string(e.what()), "line 1");
  }
  write(R"({"chat_template": "x", "bos_token": 3})");
  EXPECT_THROW(chat_template::from_model_dir(dir.string()), error);
}

TEST(chat_template, real_templates_load_from_the_shared_data) {
  GSA_REQUIRE_DATA("tokenizers/qwen3/tokenizer_config.json");
  auto qwen = chat_template::from_model_dir((test::data_dir() / "tokenizers/qwen3").string());
  ASSERT_TRUE(qwen.has_value());
  EXPECT_EQ(qwen->eos_token(), "<|im_end|>");
  EXPECT_EQ(qwen->render({{"user", "hi"}}, true), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
}

}  // namespace
}  // namespace gsa::serve
