"""TTT signals: rewards on hand-written completions, and no label leak through real GRPO/SFT."""

import copy
import math
import random
from dataclasses import replace

import pytest
import torch

from catalyst_ttt.config import SignalConfig, compose_cell
from catalyst_ttt.evaluation import Trajectory
from catalyst_ttt.pipeline import train_at_test_time
from catalyst_ttt.results import CellDir
from catalyst_ttt.signals import SIGNALS, RewardBatch, majority_answer
from catalyst_ttt.tracking import Tracker
from helpers.cells import SPLITS, TASK, run

LABEL_FREE = [n for n in SIGNALS.names() if not SIGNALS.get(n).uses_labels(SignalConfig()) and n != "none"]


def batch_of(completions, problems, group_size, model=None, tokenizer=None, gold=None, seed=0):
    return RewardBatch(
        prompts=[p.prompt for p in problems],
        completions=completions,
        completion_ids=[tokenizer(c, add_special_tokens=False)["input_ids"] if tokenizer else [] for c in completions],
        parsed=[TASK.parse(c) for c in completions],
        problems=[p.unlabeled() for p in problems],
        group_size=group_size,
        task=TASK,
        model=model,
        tokenizer=tokenizer,
        gold=gold,
        rng=random.Random(seed),
    )


def test_majority_tie_goes_to_the_answer_seen_first():
    assert majority_answer(["B", "A", "A", "B"]) == "B"
    assert majority_answer(["A", None, "B", "B"]) == "B"
    assert majority_answer([None, None]) is None


def test_majority_reward_on_a_hand_written_group():
    problem = TASK.make_problem("ABCD", ("rev",))
    completions = ["rev ABCD>DCBA#DCBA", "#DCBA", "#ABCD", "garbage", "#ABCD", "#DCBA"]
    rewards = SIGNALS.get("majority").reward(batch_of(completions, [problem] * 6, 6), SignalConfig())
    assert rewards == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]  # DCBA and ABCD tie at 2; DCBA came first


def test_process_reward_gold_is_one_and_a_wrong_step_is_less():
    problem = TASK.make_problem("ABCD", ("rot", "rev", "inc"))
    gold = TASK.render(problem.steps, problem.answer)
    one_wrong = "rot ABCD>FGHI;rev FGHI>IHGE;inc IHGE>JIHF#JIHF"
    rewards = SIGNALS.get("process").reward(batch_of([gold, one_wrong, "???"], [problem] * 3, 3), SignalConfig())
    assert rewards[0] == 1.0 and rewards[1] == pytest.approx(2 / 3) and rewards[2] == 0.0


@pytest.mark.parametrize("name", SIGNALS.names())
def test_unparseable_completions_get_zero_and_never_crash(taught, name):
    signal = SIGNALS.get(name)
    if signal.reward is None:
        pytest.skip("no reward function: not a GRPO signal")
    model, tokenizer = taught
    problem = SPLITS["id"][0]
    completions = ["", "\n", "###", "rot>;;#"]
    batch = batch_of(completions, [problem] * 4, 4, model, tokenizer, gold=[problem.answer] * 4)
    rewards = signal.reward(batch, SignalConfig())
    assert len(rewards) == 4 and all(isinstance(r, float) and math.isfinite(r) for r in rewards)
    if name in ("majority", "process", "oracle", "verifree", "predictive"):
        assert rewards[:2] == [0.0, 0.0]


def test_verifree_is_the_probability_of_the_reference_after_the_trace(taught):
    model, tokenizer = taught
    problem = TASK.make_problem("ABCD", ("rot", "rev"))
    completions = ["rot ABCD>FGHI;rev FGHI>IHGF#IHGF", "rot ABCD>FGHI;rev FGHI>IHGF#IHGF", "rot ABCD>FGHI#XXXX"]
    rewards = SIGNALS.get("verifree").reward(batch_of(completions, [problem] * 3, 3, model, tokenizer), SignalConfig())
    # independently: one forward pass over prompt + trace + "#" + reference, sum the reference's log-probs
    for completion, reward in zip(completions, rewards):
        context = problem.prompt + completion.split("#")[0] + "#"
        ids = tokenizer(context + "IHGF", add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
        n = len("IHGF")
        expected = logp[-n:].gather(-1, ids[0, -n:, None]).sum().exp().item()
        assert reward == pytest.approx(expected, rel=1e-4)


def test_predictive_is_verifree_log_minus_answer_only_log(taught):
    model, tokenizer = taught
    problem = TASK.make_problem("ABCD", ("rev",))
    completions = ["rev ABCD>DCBA#DCBA", "shf ABCD>BCDA#DCBA"]
    batch = batch_of(completions, [problem] * 2, 2, model, tokenizer)
    verifree = SIGNALS.get("verifree").reward(batch, SignalConfig())
    predictive = SIGNALS.get("predictive").reward(batch, SignalConfig())
    assert predictive[0] - predictive[1] == pytest.approx(math.log(verifree[0]) - math.log(verifree[1]), rel=1e-4)


def test_random_is_seeded_with_mean_one_half():
    problem = SPLITS["id"][0]
    rewards = SIGNALS.get("random").reward(batch_of(["#A"] * 2000, [problem] * 2000, 8, seed=1), SignalConfig())
    again = SIGNALS.get("random").reward(batch_of(["#A"] * 2000, [problem] * 2000, 8, seed=1), SignalConfig())
    assert rewards == again and abs(sum(rewards) / 2000 - 0.5) < 0.04


def test_entropy_and_self_certainty_are_finite_per_completion(taught):
    model, tokenizer = taught
    problem = SPLITS["id"][0]
    completions = ["rot ABCD>FGHI#FGHI", "#AAAA"]
    batch = batch_of(completions, [problem] * 2, 2, model, tokenizer)
    entropy = SIGNALS.get("entropy").reward(batch, SignalConfig())
    certainty = SIGNALS.get("self_certainty").reward(batch, SignalConfig())
    assert all(e <= 0 for e in entropy) and all(c >= 0 for c in certainty)


def _trained_weights(taught_state, signal_name, scramble, tmp_path, reference="majority"):
    cfg = compose_cell(
        [
            f"signal={signal_name}",
            "ttt.steps=4",
            "ttt.prompts_per_step=4",
            "ttt.num_generations=4",
            "ttt.lr=1e-2",
            "ttt.eval_every=2",
            "signal.samples=4",
            "signal.rounds=1",
            f"signal.reference={reference}",
        ]
    )
    model, tokenizer = taught_state()
    problems = SPLITS["id"]
    if scramble:  # every gold answer (and trace) replaced by a wrong one
        problems = [replace(p, answer=p.answer[::-1] + "J", steps=("x",)) for p in problems]
    store = CellDir(tmp_path, "leak", f"{signal_name}-{scramble}")
    store.start("")
    tracker = Tracker(
        mode="disabled", project="", entity=None, group="", job_type="", name="", config={}, directory=tmp_path
    )
    trajectory = Trajectory(
        TASK, {"id": problems, "heldout": SPLITS["heldout"]}, cfg.eval, 0, tokenizer, tracker, store
    )
    train_at_test_time(cfg, SIGNALS.get(signal_name), TASK, problems, model, tokenizer, trajectory, tracker)
    return {k: v.clone() for k, v in model.state_dict().items()}, trajectory


@pytest.fixture
def taught_state(taught_once):
    """A factory of fresh copies of the taught model, all starting from the same weights."""

    def fresh():
        model, tokenizer = taught_once
        return copy.deepcopy(model), tokenizer

    return fresh


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

    result = run(tiny(f"signal={name}", "signal.samples=4", "signal.rounds=2", wandb="offline"))
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
