// Request parsing and validation of the OpenAI-compatible API (issue 13 item 6), response shapes, the text
// that may be sent while streaming (stop sequences, split UTF-8 characters). No sockets.
#include <gtest/gtest.h>

#include <limits>
#include <string>

#include "serve/api.h"
#include "serve/text-output.h"

namespace gsa::serve {
namespace {

// The api_error a body raises (status, param, code); fails the test when it parses.
api_error refused(const std::string& body, endpoint kind = endpoint::completions) {
  try {
    parse_request(body, kind);
  } catch (const api_error& e) {
    return e;
  }
  ADD_FAILURE() << "accepted: " << body;
  return api_error(0, "");
}

TEST(Api, ParsesACompletion) {
  auto r = parse_request(R"({"model":"m","prompt":"Hi","max_tokens":5,"temperature":0,"top_p":0.5,"seed":7,
                             "stop":["a","bc"],"stream":true,"stream_options":{"include_usage":true},
                             "gsa":{"stats":true,"reuse":false},"user":"ignored","n":1})",
                         endpoint::completions);
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.prompt, "Hi");
  EXPECT_EQ(r.max_tokens, 5);
  EXPECT_EQ(r.temperature, 0.0f);
  EXPECT_EQ(r.top_p, 0.5f);
  ASSERT_TRUE(r.seed.has_value());
  EXPECT_EQ(*r.seed, 7u);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"a", "bc"}));
  EXPECT_TRUE(r.stream && r.include_usage && r.gsa_stats);
  EXPECT_FALSE(r.gsa_reuse);
}

TEST(Api, DefaultsAreOpenAIs) {
  auto r = parse_request(R"({"model":"m","prompt":"x","stop":null,"max_tokens":null})", endpoint::completions);
  EXPECT_EQ(r.temperature, 1.0f);
  EXPECT_EQ(r.top_p, 1.0f);
  EXPECT_FALSE(r.seed.has_value());
  EXPECT_EQ(r.max_tokens, -1);
  EXPECT_TRUE(r.stop.empty());
  EXPECT_FALSE(r.stream);
  EXPECT_TRUE(r.gsa_reuse);
}

TEST(Api, PromptForms) {
  EXPECT_EQ(parse_request(R"({"model":"m","prompt":["one"]})", endpoint::completions).prompt, "one");
  auto ids = parse_request(R"({"model":"m","prompt":[1,2,3]})", endpoint::completions);
  EXPECT_TRUE(ids.prompt_is_ids);
  EXPECT_EQ(ids.prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(parse_request(R"({"model":"m","prompt":[[4,5]]})", endpoint::completions).prompt_ids,
            (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(refused(R"({"model":"m","prompt":["a","b"]})").code, "unsupported_parameter");
  EXPECT_EQ(refused(R"({"model":"m","prompt":""})").param, "prompt");
  EXPECT_EQ(refused(R"({"model":"m","prompt":[1,-2]})").param, "prompt");
  EXPECT_EQ(refused(R"({"model":"m","prompt":[1,"x"]})").param, "prompt[1]");
}

TEST(Api, ParsesChat) {
  auto r = parse_request(R"({"model":"m","messages":[{"role":"system","content":"Be brief."},
                             {"role":"user","content":[{"type":"text","text":"Hel"},{"type":"text","text":"lo"}]},
                             {"role":"assistant","content":null}],"max_completion_tokens":9})",
                         endpoint::chat);
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[1].content, "Hello");
  EXPECT_EQ(r.messages[2].content, "");
  EXPECT_EQ(r.max_tokens, 9);
}

TEST(Api, MalformedBodies) {
  EXPECT_EQ(refused("{\"model\": ").code, "invalid_json");
  EXPECT_EQ(refused("{\"model\": ").status, 400);
  EXPECT_EQ(refused("[1,2]").code, "invalid_json");
  EXPECT_EQ(refused(std::string(300, '[') + std::string(300, ']')).code, "invalid_json");  // nesting bound
  const api_error utf8 = refused(std::string("{\"model\":\"m\",\"prompt\":\"a\xC3\x28\"}"));
  EXPECT_EQ(utf8.code, "invalid_utf8");
  EXPECT_NE(std::string(utf8.what()).find("byte 24"), std::string::npos) << utf8.what();
}

TEST(Api, MissingAndMistypedFields) {
  auto e = refused(R"({"prompt":"x"})");
  EXPECT_EQ(e.param, "model");
  EXPECT_EQ(e.code, "missing_required_parameter");
  EXPECT_EQ(refused(R"({"model":"m"})").param, "prompt");
  EXPECT_EQ(refused(R"({"model":"m"})", endpoint::chat).param, "messages");
  EXPECT_EQ(refused(R"({"model":3,"prompt":"x"})").param, "model");
  e = refused(R"({"model":"m","prompt":"x","max_tokens":"5"})");
  EXPECT_EQ(e.param, "max_tokens");
  EXPECT_EQ(e.code, "invalid_type");
  EXPECT_NE(std::string(e.what()).find("must be an integer, got a string"), std::string::npos) << e.what();
  EXPECT_EQ(refused(R"({"model":"m","prompt":"x","max_tokens":2.5})").param, "max_tokens");
  EXPECT_EQ(refused(R"({"model":"m","prompt":"x","temperature":"hot"})").param, "temperature");
  EXPECT_EQ(refused(R"({"model":"m","prompt":"x","stream":1})").param, "stream");
  EXPECT_EQ(refused(R"({"model":"m","prompt":"x","stop":5})").param, "stop");
  EXPECT_EQ(refused(R"({"model":"m","prompt":"x","gsa":{"stats":"yes"}})").param, "gsa.stats");
  EXPECT_EQ(refused(R"({"model":"m","messages":[{"content":"x"}]})", endpoint::chat).param, "messages[0].role");
  EXPECT_EQ(refused(R"({"model":"m","messages":[{"role":"wizard","content":"x"}]})", endpoint::chat).param,
            "messages[0].role");
  EXPECT_EQ(refused(R"({"model":"m","messages":[{"role":"user"}]})", endpoint::chat).param, "messages[0].content");
  EXPECT_EQ(refused(R"({"model":"m","messages":[]})", endpoint::chat).param, "messages");
  EXPECT_EQ(
      refused(R"({"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]})", endpoint::chat).code,
      "unsupported_parameter");
}

TEST(Api, RangesAndUnsupported) {
  auto e = refused(R"({"model":"m","prompt":"x","max_tokens":-1})");
  EXPECT_EQ(e.param, "max_tokens");
  EXPECT_EQ(e.code, "invalid_value");
  EXPECT_EQ(refused(R"({"model":"m","prompt":"x","max_tokens":0})").param, "max_tokens");
  EXPECT_EQ(refused(R"({"model":"m","prompt":"x","max_tokens":1e30})").code, "invalid_type");
  EXPECT_EQ(refused(R"({"model":"m","prompt":"x","max_tokens":18446744073709551615})").param, "max_tokens");
  EXPECT_EQ(refused(R"({"model":"m","prompt":"x","temperature":2.5})").param, "temperature");
  EXPECT_EQ(refused(R"({"model":"m","prompt":"x","top_p":0})").param, "top_p");
  EXPECT_EQ(refused(R"({"model":"m","prompt":"x","stop":["a","b","c","d","e"]})").param, "stop");
  EXPECT_EQ(refused(R"({"model":"m","prompt":"x","stop":[""]})").param, "stop");
  EXPECT_EQ(refused(R"({"model":"m","prompt":"x","n":0})").param, "n");
  EXPECT_EQ(refused(R"({"model":"m","prompt":"x","n":17})").param, "n");
  EXPECT_EQ(refused(R"({"model":"m","prompt":"x","n":3,"best_of":2})").param, "best_of");
  EXPECT_EQ(refused(R"({"model":"m","prompt":"x","best_of":2})").param, "best_of");
  EXPECT_EQ(refused(R"({"model":"m","prompt":"x","echo":true})").param, "echo");
  EXPECT_EQ(refused(R"({"model":"m","prompt":"x","logprobs":3})").param, "logprobs");
  EXPECT_EQ(refused(R"({"model":"m","prompt":"x","presence_penalty":0.5})").param, "presence_penalty");
  EXPECT_EQ(refused(R"({"model":"m","prompt":"x","stream_options":{"include_usage":true}})").param, "stream_options");
  EXPECT_EQ(refused(R"({"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]})",
                    endpoint::chat)
                .param,
            "tools");
  // The values that mean "off" are accepted.
  EXPECT_NO_THROW(parse_request(R"({"model":"m","prompt":"x","n":1,"echo":false,"logprobs":null,"presence_penalty":0,
                                    "frequency_penalty":0,"logit_bias":{},"best_of":1,"suffix":""})",
                                endpoint::completions));
}

TEST(Api, ModelAndContextLength) {
  auto r = parse_request(R"({"model":"demo","prompt":"x"})", endpoint::completions);
  EXPECT_NO_THROW(check_model(r, "demo"));
  try {
    check_model(r, "other");
    ADD_FAILURE();
  } catch (const api_error& e) {
    EXPECT_EQ(e.status, 404);
    EXPECT_EQ(e.code, "model_not_found");
    EXPECT_EQ(e.param, "model");
  }
  EXPECT_EQ(resolve_max_tokens(r, 10, 100), default_completion_tokens);
  EXPECT_EQ(resolve_max_tokens(r, 90, 100), 10);  // the default shrinks to what fits
  auto chat = parse_request(R"({"model":"demo","messages":[{"role":"user","content":"x"}]})", endpoint::chat);
  EXPECT_EQ(resolve_max_tokens(chat, 30, 100), 70);
  try {
    resolve_max_tokens(r, 100, 100);
    ADD_FAILURE();
  } catch (const api_error& e) {
    EXPECT_EQ(e.code, "context_length_exceeded");
    EXPECT_EQ(e.param, "prompt");
  }
  r.max_tokens = 11;
  try {
    resolve_max_tokens(r, 90, 100);
    ADD_FAILURE();
  } catch (const api_error& e) {
    EXPECT_EQ(e.param, "max_tokens");
    EXPECT_NE(std::string(e.what()).find("you requested 101 tokens (90 in the prompt, 11 for the completion)"),
              std::string::npos)
        << e.what();
  }
  r.max_tokens = 10;
  EXPECT_EQ(resolve_max_tokens(r, 90, 100), 10);
}

// fuzz-serve-request: "max_tokens": 9223372036854775807 passed parse_request (any integer >= 1 may) and the
// context_length_exceeded message added it to the prompt's length, a signed overflow (UBSan) that printed a
// negative total in a Release build.
TEST(Api, HugeMaxTokensIsRefusedWithTheTrueTotal) {
  auto r = parse_request(R"({"model":"m","prompt":"x","max_tokens":9223372036854775807})", endpoint::completions);
  EXPECT_EQ(r.max_tokens, std::numeric_limits<int64_t>::max());
  try {
    resolve_max_tokens(r, 5, 100);
    ADD_FAILURE();
  } catch (const api_error& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.code, "context_length_exceeded");
    EXPECT_NE(std::string(e.what()).find("you requested 9223372036854775812 tokens (5 in the prompt, "
                                         "9223372036854775807 for the completion)"),
              std::string::npos)
        << e.what();
  }
}

// n choices (up to max_choices); best_of may only repeat n.
TEST(Api, SeveralChoices) {
  auto r = parse_request(R"({"model":"m","prompt":"x","n":3,"best_of":3})", endpoint::completions);
  EXPECT_EQ(r.n, 3);
  EXPECT_EQ(parse_request(R"({"model":"m","prompt":"x"})", endpoint::completions).n, 1);
  EXPECT_EQ(parse_request(R"({"model":"m","messages":[{"role":"user","content":"x"}],"n":16})", endpoint::chat).n,
            max_choices);
  const auto c = response_json(endpoint::chat, "x", 5, "m", {{"a", "stop"}, {"b", "length"}}, {3, 4}, nullptr);
  ASSERT_EQ(c["choices"].size(), 2u);
  EXPECT_EQ(c["choices"][1]["index"], 1);
  EXPECT_EQ(c["choices"][1]["message"]["content"], "b");
  EXPECT_EQ(c["choices"][1]["finish_reason"], "length");
  EXPECT_EQ(c["usage"]["total_tokens"], 7);
  EXPECT_EQ(chunk_json(endpoint::completions, "x", 5, "m", "t", "", false, 2)["choices"][0]["index"], 2);
}

TEST(Api, ResponseShapes) {
  const usage u{3, 4};
  auto c = response_json(endpoint::completions, "cmpl-1", 5, "m", "hi", "length", u, nullptr);
  EXPECT_EQ(c["object"], "text_completion");
  EXPECT_EQ(c["choices"][0]["text"], "hi");
  EXPECT_EQ(c["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(c["usage"]["total_tokens"], 7);
  EXPECT_FALSE(c.contains("gsa"));
  auto ch = response_json(endpoint::chat, "chatcmpl-1", 5, "m", "hi", "stop", u, {{"budget", 3}});
  EXPECT_EQ(ch["object"], "chat.completion");
  EXPECT_EQ(ch["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(ch["choices"][0]["message"]["content"], "hi");
  EXPECT_EQ(ch["gsa"]["budget"], 3);
  auto first = chunk_json(endpoint::chat, "x", 5, "m", "", "", true);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  auto last = chunk_json(endpoint::chat, "x", 5, "m", "", "stop", false);
  EXPECT_TRUE(last["choices"][0]["delta"].empty());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(usage_chunk_json(endpoint::completions, "x", 5, "m", u)["choices"].empty());
  auto err = error_json(api_error(400, "bad", "max_tokens", "invalid_value"));
  EXPECT_EQ(err["error"]["message"], "bad");
  EXPECT_EQ(err["error"]["type"], "invalid_request_error");
  EXPECT_EQ(err["error"]["param"], "max_tokens");
  EXPECT_TRUE(error_json(api_error(401, "no", "", "invalid_api_key"))["error"]["param"].is_null());
  // A token that ends inside a character does not break the JSON text.
  EXPECT_NO_THROW(dump(response_json(endpoint::completions, "x", 5, "m", "a\xE2\x82", "length", u, nullptr)));
}

TEST(Utf8, Validation) {
  EXPECT_EQ(utf8_invalid_at("plain"), std::string_view::npos);
  EXPECT_EQ(utf8_invalid_at("h\xC3\xA9llo \xF0\x9F\x98\x80"), std::string_view::npos);
  EXPECT_EQ(utf8_invalid_at("ab\xFF"), 2u);
  EXPECT_EQ(utf8_invalid_at("\xC0\xAF"), 0u);           // overlong '/'
  EXPECT_EQ(utf8_invalid_at("x\xED\xA0\x80"), 1u);      // surrogate
  EXPECT_EQ(utf8_invalid_at("x\xF4\x90\x80\x80"), 1u);  // past U+10FFFF
  EXPECT_EQ(utf8_invalid_at("\xE2\x82"), 0u);           // truncated
  EXPECT_EQ(utf8_complete_prefix("ab\xE2\x82"), 2u);
  EXPECT_EQ(utf8_complete_prefix("ab\xE2\x82\xAC"), 5u);
  EXPECT_EQ(utf8_complete_prefix("\xF0\x9F\x98"), 0u);
  EXPECT_EQ(utf8_complete_prefix("abc"), 3u);
}

TEST(TextOutput, StopSequenceCutsBeforeIt) {
  text_output t({"END"});
  EXPECT_FALSE(t.add("Hello E"));
  EXPECT_EQ(t.sendable(), 6u);  // "E" may start "END": held back
  EXPECT_FALSE(t.add("N"));
  EXPECT_EQ(t.sendable(), 6u);
  EXPECT_TRUE(t.add("D and more"));  // a stop sequence split over tokens
  EXPECT_EQ(t.text(), "Hello ");
  EXPECT_EQ(t.sendable(), 6u);
  EXPECT_TRUE(t.add("more"));  // nothing after a stop
  EXPECT_EQ(t.text(), "Hello ");
}

TEST(TextOutput, EarliestOfSeveralStops) {
  text_output t({"zz", "b"});
  EXPECT_TRUE(t.add("aazzb"));
  EXPECT_EQ(t.text(), "aa");
  text_output u({"xy"});
  EXPECT_FALSE(u.add("x"));
  EXPECT_FALSE(u.add("x"));  // "xx": the first x can no longer start "xy"
  EXPECT_EQ(u.sendable(), 1u);
  EXPECT_FALSE(u.add("z"));
  EXPECT_EQ(u.sendable(), 3u);
}

TEST(TextOutput, HoldsBackSplitCharacters) {
  text_output t;
  t.add("caf\xC3");
  EXPECT_EQ(t.sendable(), 3u);
  t.add("\xA9");
  EXPECT_EQ(t.sendable(), 5u);
  t.add("\xE2\x82");
  EXPECT_EQ(t.sendable(), 5u);
  t.finish();
  EXPECT_EQ(t.sendable(), 7u);  // the end: whatever bytes there are
}

}  // namespace
}  // namespace gsa::serve
