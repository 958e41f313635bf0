import pytest

from tse_cli.classes import FSD_CLASSES, UnknownClassError, class_index, class_indices, multi_hot


def test_order_matches_published_label_vector():
    assert len(FSD_CLASSES) == 41
    assert FSD_CLASSES[0] == "Acoustic_guitar" and FSD_CLASSES[10] == "Cough" and FSD_CLASSES[40] == "Writing"


@pytest.mark.parametrize("name", ["Computer_keyboard", "computer keyboard", "COMPUTER_KEYBOARD", " computer Keyboard "])
def test_names_are_case_and_space_insensitive(name):
    assert class_index(name) == 9


def test_unknown_name_suggests_closest():
    with pytest.raises(UnknownClassError, match="did you mean Cough"):
        class_index("Coughh")


def test_union_multi_hot():
    idx = class_indices(["Bark", "cough", "bark"])
    assert idx == [2, 10]
    vec = multi_hot(idx)
    assert vec.sum() == 2 and vec[2] == 1 and vec[10] == 1
