// LongBench's per-dataset protocol (see longbench-protocol.h).
#include "eval/longbench-protocol.h"

#include "core/error.h"
#include "eval/text-util.h"

namespace gsa::eval {

namespace {

// Reproduced exactly from THUDM/LongBench (commit 2e00731), LongBench/config/dataset2prompt.json and
// LongBench/config/dataset2maxlen.json, every dataset, with the metric eval.py's dataset2metric assigns.
// The templates keep LongBench's own spelling ("asconcisely"); changing a character changes what the model
// reads and makes scores incomparable with published ones (tests/eval/test-longbench-protocol.cpp checks each
// template's length and FNV-1a digest against the upstream file).
constexpr longbench_dataset_info k_table[] = {
    {"narrativeqa", "qa_f1", 128,
     "You are given a story, which can be either a novel or a movie script, and a question. Answer the "
     "question asconcisely as you can, using a single phrase if possible. Do not provide any "
     "explanation.\n\nStory: {context}\n\nNow, answer the question based on the story asconcisely as "
     "you can, using a single phrase if possible. Do not provide any explanation.\n\nQuestion: "
     "{input}\n\nAnswer:"},
    {"qasper", "qa_f1", 128,
     "You are given a scientific article and a question. Answer the question as concisely as you can, "
     "using a single phrase or sentence if possible. If the question cannot be answered based on the "
     "information in the article, write \"unanswerable\". If the question is a yes/no question, answer "
     "\"yes\", \"no\", or \"unanswerable\". Do not provide any explanation.\n\nArticle: {context}\n\n "
     "Answer the question based on the above article as concisely as you can, using a single phrase or "
     "sentence if possible. If the question cannot be answered based on the information in the "
     "article, write \"unanswerable\". If the question is a yes/no question, answer \"yes\", \"no\", "
     "or \"unanswerable\". Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:"},
    {"multifieldqa_en", "qa_f1", 64,
     "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question "
     "based on the above text, only give me the answer and do not output any other words.\n\nQuestion: "
     "{input}\nAnswer:"},
    {"multifieldqa_zh", "qa_f1_zh", 64,
     "阅读以下文字并用中文简短回答：\n\n{context}\n\n现在请基于上面的文章回答下面的问题，只告诉我答案，"
     "不要输出任何其他字词。\n\n问题：{input}\n回答："},
    {"hotpotqa", "qa_f1", 32,
     "Answer the question based on the given passages. Only give me the answer and do not output any "
     "other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the "
     "given passages. Only give me the answer and do not output any other words.\n\nQuestion: "
     "{input}\nAnswer:"},
    {"2wikimqa", "qa_f1", 32,
     "Answer the question based on the given passages. Only give me the answer and do not output any "
     "other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the "
     "given passages. Only give me the answer and do not output any other words.\n\nQuestion: "
     "{input}\nAnswer:"},
    {"musique", "qa_f1", 32,
     "Answer the question based on the given passages. Only give me the answer and do not output any "
     "other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the "
     "given passages. Only give me the answer and do not output any other words.\n\nQuestion: "
     "{input}\nAnswer:"},
    {"dureader", "rouge_zh", 128,
     "请基于给定的文章回答下述问题。\n\n文章：{context}\n\n请基于上述文章回答下面的问题。\n\n问题：{input}\n回答："},
    {"gov_report", "rouge", 512,
     "You are given a report by a government agency. Write a one-page summary of the "
     "report.\n\nReport:\n{context}\n\nNow, write a one-page summary of the report.\n\nSummary:"},
    {"qmsum", "rouge", 512,
     "You are given a meeting transcript and a query containing a question or instruction. Answer the "
     "query in one or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on the "
     "above meeting transcript in one or more sentences.\n\nQuery: {input}\nAnswer:"},
    {"multi_news", "rouge", 512,
     "You are given several news passages. Write a one-page summary of all news. "
     "\n\nNews:\n{context}\n\nNow, write a one-page summary of all the news.\n\nSummary:"},
    {"vcsum", "rouge_zh", 512,
     "下面有一段会议记录，请你阅读后，写一段总结，总结会议的内容。\n会议记录：\n{context}\n\n会议总结："},
    {"trec", "classification", 64,
     "Please determine the type of the question below. Here are some examples of "
     "questions.\n\n{context}\n{input}"},
    {"triviaqa", "qa_f1", 32,
     "Answer the question based on the given passage. Only give me the answer and do not output any "
     "other words. The following are some examples.\n\n{context}\n\n{input}"},
    {"samsum", "rouge", 128,
     "Summarize the dialogue into a few short sentences. The following are some "
     "examples.\n\n{context}\n\n{input}"},
    {"lsht", "classification", 64, "请判断给定新闻的类别，下面是一些例子。\n\n{context}\n{input}"},
    {"passage_retrieval_en", "retrieval", 32,
     "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph "
     "the abstract is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter "
     "the number of the paragraph that the abstract is from. The answer format must be like "
     "\"Paragraph 1\", \"Paragraph 2\", etc.\n\nThe answer is: "},
    {"passage_count", "count", 32,
     "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please "
     "carefully read these paragraphs and determine how many unique paragraphs there are after "
     "removing duplicates. In other words, how many non-repeating paragraphs are there in "
     "total?\n\n{context}\n\nPlease enter the final count of unique paragraphs after removing "
     "duplicates. The output format should only contain the number, such as 1, 2, 3, and so on.\n\nThe "
     "final answer is: "},
    {"passage_retrieval_zh", "retrieval_zh", 32,
     "以下是若干段落文字，以及其中一个段落的摘要。请确定给定的摘要出自哪一段。\n\n{context}\n\n下面是一个摘要\n\n{input}"
     "\n\n请输入摘要所属段落的编号。答案格式必须是\"段落1\"，\"段落2\"等格式\n\n答案是："},
    {"lcc", "code_sim", 64,
     "Please complete the code given below. \n{context}Next line of code:\n"},
    {"repobench-p", "code_sim", 64,
     "Please complete the code given below. \n{context}{input}Next line of code:\n"},
};

}  // namespace

std::span<const longbench_dataset_info> longbench_table() { return k_table; }

const longbench_dataset_info& longbench_info(std::string_view dataset) {
  for (const auto& d : k_table)
    if (dataset == d.dataset) return d;
  std::vector<std::string> names;
  for (const auto& d : k_table) names.emplace_back(d.dataset);
  fail("unknown LongBench dataset '{}'; known: {}", dataset, join(names, ", "));
}

longbench_prompt_text longbench_prompt(const longbench_record& r) {
  const std::string_view tmpl = longbench_info(r.dataset).prompt;
  longbench_prompt_text out;
  bool after = false;
  for (size_t i = 0; i < tmpl.size();) {
    std::string& to = after ? out.after_context : out.prompt;
    if (tmpl.substr(i, 9) == "{context}") {
      out.prompt += r.context;
      after = true;
      i += 9;
    } else if (tmpl.substr(i, 7) == "{input}") {
      to += r.input;
      if (after) out.prompt += r.input;
      i += 7;
    } else {
      GSA_ASSERT(tmpl[i] != '{' && tmpl[i] != '}', "LongBench template of {} has a field other than "
                 "{{context}} and {{input}}", r.dataset);
      to += tmpl[i];
      if (after) out.prompt += tmpl[i];
      i++;
    }
  }
  GSA_ASSERT(after, "LongBench template of {} has no {{context}}", r.dataset);
  return out;
}

std::string truncate_prompt_middle(const std::string& prompt, int64_t max_length, const token_encoder& encode,
                                   const token_decoder& decode) {
  if (max_length < 2) fail("the LongBench length budget is {} tokens; give at least 2", max_length);
  const std::vector<int32_t> ids = encode(prompt);
  if (int64_t(ids.size()) <= max_length) return prompt;
  const size_t half = size_t(max_length / 2);
  const std::span<const int32_t> all(ids);
  return decode(all.first(half)) + decode(all.last(half));
}

bool longbench_stops_at_newline(std::string_view dataset) { return dataset == "samsum"; }

bool longbench_first_line_only(std::string_view dataset) {
  return dataset == "trec" || dataset == "triviaqa" || dataset == "samsum" || dataset == "lsht";
}

const char* longbench_e_bucket(int64_t length) {
  return length < 4000 ? "0-4k" : length < 8000 ? "4-8k" : "8k+";
}

}  // namespace gsa::eval
