"""vppo.data.prompts: template loading/rendering and the TRL conversational prompt."""

from __future__ import annotations

import pytest

from vppo.data.prompts import (
    available_templates,
    build_prompt_messages,
    load_template,
    remove_instruction,
    render_prompt,
    split_image_placeholders,
)

INSTRUCTION = (
    "You first think through the reasoning process as an internal monologue, enclosed within "
    "<think> </think> tags. Then, provide your final answer enclosed within \\boxed{}."
)


def test_default_template_matches_the_official_prompt_exactly():
    text = render_prompt("  <image>Find the area of the triangle.\n ")
    assert text == "<image>Find the area of the triangle.\n\n" + INSTRUCTION
    assert render_prompt("x", None) == render_prompt("x", "vppo_math") == "x\n\n" + INSTRUCTION
    assert render_prompt("  Q?  ", "plain") == "Q?"
    assert {"vppo_math", "plain"} <= set(available_templates())


@pytest.mark.parametrize(
    "problem",
    [
        "<image>Sum the digits?\n\n" + INSTRUCTION,  # the official layout
        "<image>Sum the digits? " + INSTRUCTION + "\n",  # one line, trailing newline
        "<image>Sum the digits?\n" + INSTRUCTION.replace(". Then", ".\nThen").replace(" ", "  ", 3),
        "<image>Sum the digits?\r\n\r\n" + INSTRUCTION.replace(" ", "\u00a0", 1),
        INSTRUCTION + "\n<image>Sum the digits?",  # before the question
    ],
)
def test_an_instruction_already_in_the_problem_is_not_added_twice(problem):
    text = render_prompt(problem)
    assert text.count("You first think") == 1 and text.endswith("\n\n" + INSTRUCTION)
    assert text == "<image>Sum the digits?\n\n" + INSTRUCTION
    assert load_template("vppo_math").instructions == (INSTRUCTION,)
    assert render_prompt(problem, "plain") == problem.strip()  # plain adds nothing, keeps all


def test_remove_instruction_matches_whole_instructions_only():
    assert (
        remove_instruction("Q? You first think twice.", INSTRUCTION) == "Q? You first think twice."
    )
    assert remove_instruction("Q?", "") == "Q?"
    assert remove_instruction("A " + INSTRUCTION + " B", INSTRUCTION) == "A\nB"
    # a template with text on both sides: neither is added twice
    template = load_template("Question: {{ problem }}\nAnswer in \\boxed{}.")
    assert template.instructions == ("Question:", "Answer in \\boxed{}.")
    assert (
        template.render("Question: 2+2? Answer in \\boxed{}.")
        == "Question: 2+2?\nAnswer in \\boxed{}."
    )


def test_inline_file_and_extra_variables(tmp_path):
    assert render_prompt("Q", "Question: {{ problem }}") == "Question: Q"
    assert render_prompt("Q", "{{ content | trim }}!") == "Q!"  # EasyR1-style variable name
    path = tmp_path / "mine.jinja"
    path.write_text("{{ problem }}\nOptions: {{ choices | join(', ') }}\n")
    assert render_prompt("Q", str(path), choices=["A", "B"]) == "Q\nOptions: A, B"
    template = load_template(path)
    assert template.variables == {"problem", "choices"}
    with pytest.raises(ValueError, match="uses variable 'choices', which was not given"):
        template.render("Q")


def test_template_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'vppo_maths' is not a built-in template.*plain"):
        load_template("vppo_maths")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        load_template(str(tmp_path / "missing.jinja"))
    with pytest.raises(ValueError, match=r"never uses \{\{ problem \}\}"):
        load_template("Solve it: {{ question }}")
    with pytest.raises(ValueError, match="Jinja syntax error at line 1"):
        load_template("{{ problem ")
    with pytest.raises(ValueError, match="is a directory"):
        load_template(str(tmp_path))
    with pytest.raises(ValueError, match="empty string"):
        load_template("  ")
    with pytest.raises(ValueError, match="problem must be a string"):
        render_prompt(None)  # type: ignore[arg-type]


def test_placeholders_become_image_parts_in_place():
    assert split_image_placeholders("<image>A<image>B") == [
        {"type": "image"},
        {"type": "text", "text": "A"},
        {"type": "image"},
        {"type": "text", "text": "B"},
    ]
    assert split_image_placeholders("Compare <image> and <image>") == [
        {"type": "text", "text": "Compare "},
        {"type": "image"},
        {"type": "text", "text": " and "},
        {"type": "image"},
    ]
    assert split_image_placeholders("[img]x", placeholder="[img]") == [
        {"type": "image"},
        {"type": "text", "text": "x"},
    ]


def test_build_prompt_messages():
    msgs = build_prompt_messages("<image>What?", 1, system_prompt="Be brief.")
    assert msgs == [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},
    ]
    # no placeholder: all images first, like TRL's own layout
    assert build_prompt_messages("What?", 2) == [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "What?"}],
        }
    ]
    assert build_prompt_messages("Text only", 0) == [
        {"role": "user", "content": [{"type": "text", "text": "Text only"}]}
    ]
    with pytest.raises(ValueError, match="2 '<image>' placeholders but the row has 1 image"):
        build_prompt_messages("<image><image>", 1)
    with pytest.raises(ValueError, match="1 '<image>' placeholder but the row has 2 images"):
        build_prompt_messages("<image>", 2)
