"""TTT signals: rewards by value on hand-made groups, and no label leak through real GRPO/SFT."""

import copy
import math
import random
from dataclasses import replace

import pytest
import torch
from transformers import TrainerState

from catalyst_ttt.config import compose_cell
from catalyst_ttt.errors import UserError
from catalyst_ttt.generation import generate
from catalyst_ttt.metrics.accuracy import maj_at_k
from catalyst_ttt.schema import ACCESS_CLASSES, SignalConfig
from catalyst_ttt.signals import SIGNALS, RewardBatch, consensus_rows
from catalyst_ttt.tasks.alchemy import Alchemy
from catalyst_ttt.tasks.gsm8k import GSM8K, GSM8KConfig
from catalyst_ttt.training import StepHook, reward_diagnostics, ttrl_diagnostics
from catalyst_ttt.votes import majority_answer
from helpers.cells import SPLITS, TASK, run
from helpers.gsm8k_data import gsm8k_rows, write_jsonl
from helpers.ttt import reward_function, train_on

GRPO = [n for n in SIGNALS.names() if SIGNALS.get(n).trainer == "grpo"]
# Signals with a reward that reads the completions (replay_only's never varies: only its anchor trains).
LABEL_FREE = [
    n
    for n in SIGNALS.names()
    if not SIGNALS.get(n).uses_labels(SignalConfig()) and SIGNALS.get(n).trainer and SIGNALS.get(n).reward_varies
]

# One alchemy problem and a hand-made group: AB -rot-> FG -rev-> GF (alphabet A-J).
PROBLEM = TASK.make_problem("AB", ("rot", "rev"))
GOLD = "rot AB>FG;rev FG>GF#GF"
WRONG_STEP = "rot AB>FG;rev FG>FG#FG"  # parses; its second step's output is false
WRONG_OPS = "shf AB>BA;inc BA>CB#CB"  # every step a true fact chained from AB, but not the prompt's ops
ANSWER_ONLY = "#GF"
GROUP = [GOLD, "###", "", "rot AB>", WRONG_STEP, WRONG_OPS, ANSWER_ONLY]
SCORED = [0, 4, 5, 6]  # the completions with an answer of the task's form
NOISE_FREE_TASK = Alchemy(replace(TASK.cfg, noise_chars=0))  # its format view is the prompt itself


def batch_of(completions, problems, group_size, model=None, tokenizer=None, gold=None, seed=0, task=TASK):
    return RewardBatch(
        prompts=[p.prompt for p in problems],
        completions=completions,
        completion_ids=[tokenizer(c, add_special_tokens=False)["input_ids"] if tokenizer else [] for c in completions],
        parsed=[task.parse(c) for c in completions],
        problems=[p.unlabeled() for p in problems],
        group_size=group_size,
        task=task,
        model=model,
        tokenizer=tokenizer,
        gold=gold,
        rng=random.Random(seed),
    )


def group_batch(model=None, tokenizer=None, seed=0):
    return batch_of(GROUP, [PROBLEM] * len(GROUP), len(GROUP), model, tokenizer, [PROBLEM.answer] * len(GROUP), seed)


@pytest.fixture(scope="module")
def gsm8k(tmp_path_factory):
    path = write_jsonl(tmp_path_factory.mktemp("gsm") / "gsm.jsonl", gsm8k_rows(12))
    return GSM8K(GSM8KConfig(path=str(path), n_id=4, n_heldout=4)), path


# -- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["###", "#GF#", "##GF", "#gf", "#GK", "#G F", "#", "rot AB>", "", "\n"])
def test_alchemy_parse_refuses_what_is_not_an_element(text):
    assert TASK.parse(text).answer is None  # K is outside the 10-letter alphabet; "##" is no answer


def test_parse_reads_answers_of_the_task_form(gsm8k):
    from catalyst_ttt.tasks.arith import Arith, ArithConfig

    assert TASK.parse(GOLD).answer == "GF" and TASK.parse(GOLD).steps == ("rot AB>FG", "rev FG>GF")
    arith = Arith(ArithConfig(n_train=1))
    assert arith.parse("7+5+0=12#832").answer == "832"
    assert [arith.parse(t).answer for t in ("#83a", "###", "#8#3", "#", "# 8 3")] == [None] * 5
    task, _ = gsm8k
    assert [task.parse(t).answer for t in ("x\n#### 1,200", "#### $12", "#### 12.0")] == ["1200", "$12", "12.0"]
    assert [task.parse(t).answer for t in ("#####", "#### ##", "#### apples", "### 12")] == [None] * 4


# -- votes -------------------------------------------------------------------------------


def test_majority_tie_goes_to_the_answer_seen_first():
    assert majority_answer(["B", "A", "A", "B"]) == "B"
    assert majority_answer(["A", None, "B", "B"]) == "B"
    assert majority_answer([None, None]) is None


def test_votes_use_the_tasks_answers_equal(gsm8k):
    task, _ = gsm8k
    answers = ["12", "13", "12.0", "13", "$12"]
    assert majority_answer(answers) == "13"  # as strings, 13 has two votes and 12 one of each spelling
    assert majority_answer(answers, task.answers_equal) == "12"  # three votes for twelve
    assert maj_at_k(answers, "12", task.answers_equal) == 1.0 and maj_at_k(answers, "13", task.answers_equal) == 0.0
    assert majority_answer(["13", "12", "12.0", "13"], task.answers_equal) == "13"  # a tie: first seen wins
    completions = [f"x\n#### {a}" for a in answers]
    problem = replace(task.problems[0], prompt="q\n")
    batch = batch_of(completions, [problem] * 5, 5, task=task)
    assert SIGNALS.get("majority").rewards(batch, SignalConfig()) == [1.0, 0.0, 1.0, 0.0, 1.0]
    rows = consensus_rows(task, ["q\n"], [completions])
    assert [r["completion"] for r in rows] == [completions[0], completions[2], completions[4]]


# -- every signal's reward on one hand-made group ----------------------------------------


def test_majority_reward_by_value():
    assert SIGNALS.get("majority").rewards(group_batch(), SignalConfig()) == [1.0, 0, 0, 0, 0, 0, 1.0]


def test_oracle_reward_by_value():
    assert SIGNALS.get("oracle").rewards(group_batch(), SignalConfig()) == [1.0, 0, 0, 0, 0, 0, 1.0]


def test_process_rewards_local_validity_and_verifier_the_full_check():
    process = SIGNALS.get("process").rewards(group_batch(), SignalConfig())
    verifier = SIGNALS.get("verifier").rewards(group_batch(), SignalConfig())
    # the wrong ops form a locally valid chain: process pays it in full, the verifier not at all
    assert process == [1.0, 0, 0, 0, 0.5, 1.0, 0.0]
    assert verifier == [1.0, 0, 0, 0, 0.5, 0.0, 0.0]


def test_majority_x_process_pays_the_majoritys_valid_step_share_only():
    # GF wins (GOLD, ANSWER_ONLY): GOLD's chain is valid (1), ANSWER_ONLY has no step (0); FG and CB lose
    assert SIGNALS.get("majority_x_process").rewards(group_batch(), SignalConfig()) == [1.0, 0, 0, 0, 0, 0, 0.0]
    # FG wins: WRONG_STEP pays its one valid step of two; GOLD's valid chain to the minority answer pays 0
    completions = [WRONG_STEP, "#FG", GOLD, "###"]
    batch = batch_of(completions, [PROBLEM] * 4, 4)
    assert SIGNALS.get("majority_x_process").rewards(batch, SignalConfig()) == [0.5, 0.0, 0.0, 0.0]


def test_guarded_majority_keeps_minorities_and_skips_a_prompt_whose_majority_flipped():
    guarded = SIGNALS.get("guarded_majority")
    memory: dict = {}
    other = TASK.make_problem("CD", ("rot", "rev"))

    def visit(completions, problem=PROBLEM):
        batch = replace(batch_of(completions, [problem] * len(completions), len(completions)), memory=memory)
        return guarded.rewards(batch, SignalConfig())

    # first visit: GF has 2 votes; FG and CB one each, so half the majority's reward; garbage 0
    assert visit(GROUP) == [1.0, 0, 0, 0, 0.5, 0.5, 1.0]
    # the majority flips to FG: the prompt is skipped (every reward equal, so no GRPO update)
    assert visit(["#FG", "#FG", "#FG", "#GF", "###", "#CB"]) == [0.0] * 6
    # another prompt keeps its own memory; a garbage-only group changes no memory
    assert visit(["#AB", "#AB", "#BA"], other) == [1.0, 1.0, 0.5]
    assert visit(["###", "", "rot AB>"]) == [0.0] * 3
    # FG holds on the next visit: trained on again, minorities by their votes
    assert visit(["#FG", "#FG", "#FG", "#GF", "###", "#CB"]) == [1.0, 1.0, 1.0, 1 / 3, 0.0, 1 / 3]
    assert memory["guarded_majority"] == {PROBLEM.prompt: "FG", other.prompt: "AB"}


def test_format_view_adds_the_shift_format_noise_before_the_closing_character():
    view = TASK.format_view(PROBLEM.prompt, random.Random(0))
    assert view != PROBLEM.prompt and view.endswith(":") and view.count("_") == TASK.cfg.noise_chars
    assert view.replace("_", "") == PROBLEM.prompt
    assert view == TASK.format_view(PROBLEM.prompt, random.Random(0))  # seeded


def test_cross_view_rewards_agreement_with_the_policys_answer_to_the_view(taught):
    """With no noise (the view is the prompt itself) and a near-zero temperature, the view's majority is
    the policy's greedy answer: the reward is 1 exactly for completions that give that answer."""
    model, tokenizer = taught
    task = NOISE_FREE_TASK
    greedy = generate(model, tokenizer, [PROBLEM.prompt], task.max_completion_chars, batch_size=1)[0][0]
    answer = task.parse(greedy).answer
    assert answer is not None  # the taught model writes the format
    other = next(a for a in ("GF", "FG", "CB") if a != answer)
    completions = [f"#{answer}", f"#{other}", "###", greedy]
    batch = replace(batch_of(completions, [PROBLEM] * 4, 4, model, tokenizer, task=task), temperature=1e-4)
    assert SIGNALS.get("cross_view").rewards(batch, SignalConfig()) == [1.0, 0.0, 0.0, 1.0]


def test_cross_view_is_refused_on_a_task_without_a_format_shift(gsm8k):
    _, path = gsm8k
    with pytest.raises(UserError, match="signal cross_view needs a format shift.*tasks with one: alchemy, arith"):
        compose_cell(["task=gsm8k", f"task.path={path}", "signal=cross_view"])


def test_random_is_bernoulli_on_answered_completions_and_seeded():
    rewards = SIGNALS.get("random").rewards(group_batch(seed=3), SignalConfig())
    rng = random.Random(3)
    draws = [float(rng.random() < 0.5) for _ in GROUP]
    assert rewards == [draws[i] if i in SCORED else 0.0 for i in range(len(GROUP))]
    problem = SPLITS["id"][0]
    many = SIGNALS.get("random").rewards(batch_of(["#AB"] * 2000, [problem] * 2000, 8, seed=1), SignalConfig())
    assert abs(sum(many) / 2000 - 0.5) < 0.04


def _reference_logprob(model, tokenizer, prompt: str, completion: str, reference: str) -> float:
    """log p(reference | prompt + trace + '#'), from one forward pass over the whole string."""
    context = prompt + completion.split("#")[0] + "#"
    ids = tokenizer(context + reference, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    n = len(tokenizer(reference, add_special_tokens=False)["input_ids"])
    return logp[-n:].gather(-1, ids[0, -n:, None]).sum().item()


def test_verifree_is_the_probability_of_the_majority_answer_after_the_trace(taught):
    model, tokenizer = taught
    rewards = SIGNALS.get("verifree").rewards(group_batch(model, tokenizer), SignalConfig())
    expected = [0.0] * len(GROUP)
    for i in SCORED:  # the group's majority answer is GF
        expected[i] = math.exp(_reference_logprob(model, tokenizer, PROBLEM.prompt, GROUP[i], "GF"))
    assert rewards == pytest.approx(expected, rel=1e-4, abs=1e-9)


def test_verifree_with_reference_gold_reads_the_gold_answer(taught):
    model, tokenizer = taught
    batch = group_batch(model, tokenizer)
    batch.gold = ["CB"] * len(GROUP)  # not the group's majority
    rewards = SIGNALS.get("verifree").rewards(batch, SignalConfig(reference="gold"))
    expected = [math.exp(_reference_logprob(model, tokenizer, PROBLEM.prompt, GROUP[i], "CB")) for i in SCORED]
    assert [rewards[i] for i in SCORED] == pytest.approx(expected, rel=1e-4)


def test_predictive_subtracts_the_groups_mean_and_puts_garbage_at_the_minimum(taught):
    model, tokenizer = taught
    rewards = SIGNALS.get("predictive").rewards(group_batch(model, tokenizer), SignalConfig())
    logprobs = {i: _reference_logprob(model, tokenizer, PROBLEM.prompt, GROUP[i], "GF") for i in SCORED}
    baseline = sum(logprobs.values()) / len(logprobs)  # four different traces
    expected = {i: lp - baseline for i, lp in logprobs.items()}
    assert len({round(v, 4) for v in expected.values()}) == 4  # the baseline does not cancel anything
    for i in range(len(GROUP)):
        assert rewards[i] == pytest.approx(expected.get(i, min(expected.values())), rel=1e-4, abs=1e-5)


def _direct_token_stats(model, tokenizer, prompt: str, completion_ids: list[int]) -> tuple[float, float]:
    """Mean entropy and mean KL(uniform || p) of the distributions that predict each completion token."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    rows = logp[len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(completion_ids)]  # row t predicts token t+1
    vocab = logp.shape[-1]
    entropy = -(rows.exp() * rows).sum(-1).mean().item()
    certainty = (-math.log(vocab) - rows.mean(-1)).mean().item()
    return entropy, certainty


def test_entropy_and_self_certainty_over_the_exact_completion_tokens(taught):
    model, tokenizer = taught
    batch = group_batch(model, tokenizer)
    entropy = SIGNALS.get("entropy").rewards(batch, SignalConfig())
    certainty = SIGNALS.get("self_certainty").rewards(batch, SignalConfig())
    log_vocab = math.log(model.config.vocab_size)
    for i in range(len(GROUP)):
        if i not in SCORED:
            assert entropy[i] == 0.0 and certainty[i] == 0.0
            continue
        h, kl = _direct_token_stats(model, tokenizer, PROBLEM.prompt, batch.completion_ids[i])
        assert entropy[i] == pytest.approx(log_vocab - h, rel=1e-4)
        assert certainty[i] == pytest.approx(kl, rel=1e-4)
    assert len({round(certainty[i], 4) for i in SCORED}) == len(SCORED)


@pytest.mark.parametrize("name", GRPO)
def test_garbage_gets_the_floor_from_every_signal(taught, name):
    """A group of garbage scores 0; "###" beside a well-formed completion scores the floor."""
    model, tokenizer = taught
    garbage = ["", "\n", "###", "rot>;;#", "rot AB>", "#AB#"]
    batch = batch_of(garbage, [PROBLEM] * 6, 6, model, tokenizer, gold=[PROBLEM.answer] * 6)
    assert SIGNALS.get(name).rewards(batch, SignalConfig()) == [0.0] * 6
    mixed = batch_of(["###", GOLD, WRONG_STEP], [PROBLEM] * 3, 3, model, tokenizer, gold=[PROBLEM.answer] * 3)
    rewards = SIGNALS.get(name).rewards(mixed, SignalConfig())
    assert all(math.isfinite(r) for r in rewards)
    assert rewards[0] == (min(rewards[1:]) if name == "predictive" else 0.0)


# -- access classes ----------------------------------------------------------------------


def test_access_classes_and_label_use():
    default, gold = SignalConfig(), SignalConfig(reference="gold")
    classes = {n: SIGNALS.get(n).access_of(default) for n in SIGNALS.names()}
    assert classes["process"] == "partial verifier" and classes["verifier"] == "perfect verifier"
    assert classes["oracle"] == "gold" and set(classes.values()) == set(ACCESS_CLASSES)
    for name in SIGNALS.names():
        signal = SIGNALS.get(name)
        assert signal.uses_labels(default) == (classes[name] == "gold")
        assert signal.access_of(gold) == ("gold" if name in ("verifree", "predictive", "oracle") else classes[name])


def test_verifier_on_gsm8k_is_refused_up_front(gsm8k):
    _, path = gsm8k
    with pytest.raises(UserError, match="signal verifier needs a full step verifier.*tasks with one: alchemy, arith"):
        compose_cell(["task=gsm8k", f"task.path={path}", "signal=verifier"])
    sizes = [
        "task.n_id=4",
        "task.n_heldout=2",
        "task.n_train=1",
        "task.n_reader=1",
        "catalyst.n=1",
        "ttt.prompts_per_step=2",
    ]
    compose_cell(["task=gsm8k", f"task.path={path}", "signal=process", *sizes])  # the local check serves gsm8k


# -- diagnostics the harness computes from gold ------------------------------------------


def test_frac_zero_std_and_local_valid_wrong_on_a_hand_made_batch():
    local_valid_wrong_answer = "rot AB>FG;rev FG>GF#AB"
    completions = [GOLD, GOLD, ANSWER_ONLY] + [WRONG_OPS, local_valid_wrong_answer, "###"]
    batch = batch_of(completions, [PROBLEM] * 6, 3)
    # distinct answers: {GF} in group one, {CB, AB} in group two ("###" has none)
    assert reward_diagnostics(batch, [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]) == {
        "ttt/frac_zero_std": 0.5,
        "ttt/distinct_answers": 1.5,
    }
    assert reward_diagnostics(batch, [1.0, 0.0, 1.0, 0.5, 0.5, 0.5])["ttt/frac_zero_std"] == 0.5
    diagnostics = ttrl_diagnostics(batch, [PROBLEM.answer] * 6, [1.0, 1.0, 1.0, 1.0, 1.0, 0.0], TASK)
    assert diagnostics["ttrl/local_valid_wrong"] == pytest.approx(2 / 6)  # WRONG_OPS and the wrong answer
    assert diagnostics["ttrl/oracle_acc"] == pytest.approx(3 / 6)
    assert diagnostics["ttrl/label_acc"] == 0.5  # GF wins group one; CB (first seen of a tie) group two
    assert diagnostics["ttrl/majority_ratio"] == pytest.approx((1 + 1 / 3) / 2)
    assert diagnostics["ttrl/reward_acc"] == pytest.approx(4 / 6)


def test_the_reward_function_logs_its_diagnostics(taught):
    model, tokenizer = taught
    cfg = compose_cell(["signal=process", "ttt.num_generations=3"])
    logged: dict[str, float] = {}
    reward = reward_function(cfg, [PROBLEM], model, tokenizer)
    completions = [GOLD, WRONG_OPS, "###"]
    ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]
    assert reward([PROBLEM.prompt] * 3, completions, ids, log_metric=logged.__setitem__) == [1.0, 1.0, 0.0]
    assert logged["ttt/frac_zero_std"] == 0.0 and logged["ttrl/local_valid_wrong"] == pytest.approx(1 / 3)
    seen: list[dict] = []
    hook = StepHook(on_log=lambda step, logs: seen.append(logs), on_eval=lambda step: None, every=100)
    hook.on_log(None, TrainerState(global_step=1), None, logs={**logged, "reward": 0.5})
    assert set(seen[0]) == set(logged) | {"ttt/reward"}  # the trainer's own keys get ttt/, ours keep theirs


def test_the_reward_function_scores_with_the_model_it_closes_over(taught):
    model, tokenizer = taught
    cfg = compose_cell(["signal=verifree", f"ttt.num_generations={len(GROUP)}"])
    reward = reward_function(cfg, [PROBLEM], model, tokenizer)
    ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in GROUP]
    before = reward([PROBLEM.prompt] * len(GROUP), GROUP, ids)
    assert before == SIGNALS.get("verifree").rewards(group_batch(model, tokenizer), SignalConfig())
    with torch.no_grad():  # what GRPO does to the policy, the reward sees
        for parameter in model.parameters():
            parameter.mul_(1.5)
    after = reward([PROBLEM.prompt] * len(GROUP), GROUP, ids)
    assert [after[i] for i in SCORED] != pytest.approx([before[i] for i in SCORED], rel=1e-3)


# -- no label leak through real trainers -------------------------------------------------


def _trained_weights(taught_state, signal_name, scramble, tmp_path, reference="majority"):
    model, tokenizer = taught_state()
    problems = SPLITS["id"]
    if scramble:  # every gold answer (and trace) replaced by a wrong one
        problems = [replace(p, answer=p.answer[::-1] + "J", steps=("x",)) for p in problems]
    overrides = [f"signal={signal_name}", f"signal.reference={reference}"]
    # The taught model never saw the noise character: it answers no noisy view, so cross_view's reward
    # would stay 0 and nothing would train. A noise-free view is one it reads; gold access is the same.
    task = NOISE_FREE_TASK if signal_name == "cross_view" else TASK
    trajectory = train_on(model, tokenizer, problems, overrides, tmp_path, task)
    return {k: v.clone() for k, v in model.state_dict().items()}, trajectory


@pytest.fixture
def taught_state(taught_once):
    """A factory of fresh copies of the taught model, all starting from the same weights."""

    def fresh():
        model, tokenizer = taught_once
        return copy.deepcopy(model), tokenizer

    return fresh


def test_the_label_free_signals_cover_every_access_class_but_gold():
    classes = {SIGNALS.get(n).access_of(SignalConfig()) for n in LABEL_FREE}
    assert classes == set(ACCESS_CLASSES) - {"gold"} and "verifier" in LABEL_FREE


@pytest.mark.parametrize("name", LABEL_FREE)
def test_label_free_signals_never_see_gold_answers(taught_state, tmp_path, name):
    original, _ = _trained_weights(taught_state, name, scramble=False, tmp_path=tmp_path)
    scrambled, _ = _trained_weights(taught_state, name, scramble=True, tmp_path=tmp_path)
    start = taught_state()[0].state_dict()
    assert any(not torch.equal(original[k], start[k]) for k in start)  # it trained
    assert all(torch.equal(original[k], scrambled[k]) for k in original)


@pytest.mark.parametrize("name, reference", [("oracle", "majority"), ("verifree", "gold")])
def test_label_using_signals_do_see_gold_answers(taught_state, tmp_path, name, reference):
    original, _ = _trained_weights(taught_state, name, scramble=False, tmp_path=tmp_path, reference=reference)
    scrambled, _ = _trained_weights(taught_state, name, scramble=True, tmp_path=tmp_path, reference=reference)
    assert any(not torch.equal(original[k], scrambled[k]) for k in original)


@pytest.mark.slow
@pytest.mark.parametrize("name", SIGNALS.names())
def test_every_signal_runs_a_cell_and_reports_its_metrics(tiny, name):
    from pathlib import Path

    from helpers.wandb_offline import read_offline_run

    anchor = ["ttt.anchor=replay"] if name == "replay_only" else []  # replay alone needs the replay anchor
    result = run(tiny(f"signal={name}", "signal.samples=4", "signal.rounds=2", *anchor, wandb="offline"))
    assert result["status"] == "done", result.get("error")
    assert result["uses_labels"] == (name == "oracle")
    offline = read_offline_run(Path(result["wandb_dir"]))
    assert offline.config["uses_labels"] == (name == "oracle")
    assert offline.summary["id/acc/greedy"] == result["metrics"]["id"]["acc/greedy"]
    if SIGNALS.get(name).trainer == "grpo":
        assert len(offline.series(f"ttt/rewards/{name}/mean")) == 4
        assert offline.series("ttrl/label_acc") and offline.series("ttrl/reward_acc")
    elif name == "self_sft":
        assert offline.series("ttt/consensus_rows")
