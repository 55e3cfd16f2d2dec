"""Official image lists: text files of ``<relative image path> <class number>`` lines.

PACS's ``<domain>_<split>_kfold.txt`` (classes numbered from 1), DomainNet's
``<domain>_train.txt`` / ``_test.txt`` and VisDA-2017's ``image_list.txt`` (from 0) are such
lists. :func:`classes_from_lists` reads the class order a release's lists use (DomainNet's is
its own: ``tent``, ``The_Eiffel_Tower``, ``tiger``). :func:`read_image_list` reads one list
against the tree it describes and says, in one sentence each, what does not fit: a malformed
line, listed files that do not exist, class numbers outside the class range, and class numbers
that disagree with the image's class folder.
"""

from __future__ import annotations

import os

from jaxdann.data.folder import format_paths
from jaxdann.errors import DataError

__all__ = ["classes_from_lists", "parse_image_list", "read_image_list"]


def parse_image_list(list_path: str, kind: str, base: int) -> list[tuple[str, int]]:
    """The (path, number) of every non-blank line; a DataError for the first malformed one."""
    entries = []
    with open(list_path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.strip().rsplit(maxsplit=1)
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                raise DataError(
                    f"Line {line_number} of {kind} {list_path!r} is {line.strip()!r}; each line "
                    f"must be '<relative image path> <class number from {base}>'."
                )
            relative = fields[0].replace("\\", "/").removeprefix("./").lstrip("/")
            entries.append((relative, int(fields[1])))
    return entries


def read_image_list(
    list_path: str,
    root: str,
    class_names: tuple[str, ...],
    *,
    prefix: str = "",
    base: int = 0,
    kind: str = "image list",
) -> tuple[list[str], list[int]]:
    """Paths (relative to ``root``) and 0-based labels of the images a list names.

    A listed path is relative to ``root/prefix``; class ``base`` is ``class_names[0]`` (PACS
    numbers from 1). Every listed file must exist, every number lie in the class range and name
    the image's folder. ``kind`` names the list in messages ("split file", "image list").
    """
    paths: list[str] = []
    labels: list[int] = []
    missing, outside, disagreeing = [], [], []
    count = len(class_names)
    for relative, number in parse_image_list(list_path, kind, base):
        relative = f"{prefix}/{relative}" if prefix else relative
        label = number - base
        if not os.path.isfile(os.path.join(root, relative)):
            missing.append(relative)
        elif not 0 <= label < count:
            outside.append(f"{relative} ({number})")
        elif (relative.split("/")[-2] if "/" in relative else "") != class_names[label]:
            folder = relative.split("/")[-2] if "/" in relative else ""
            disagreeing.append(f"{relative} (class number {number}, folder {folder!r})")
        else:
            paths.append(relative)
            labels.append(label)
    if missing:
        raise DataError(
            f"{len(missing)} files listed in {kind} {list_path!r} do not exist under "
            f"{root!r}: {format_paths(missing)}; fix the list or the root."
        )
    if outside:
        raise DataError(
            f"{len(outside)} lines of {kind} {list_path!r} give a class number outside "
            f"{base}..{base + count - 1} (the {count} class folders): {format_paths(outside)}; "
            "fix the list."
        )
    if disagreeing:
        raise DataError(
            f"{len(disagreeing)} lines of {kind} {list_path!r} give a class number that "
            f"disagrees with the image's folder (classes numbered from {base} in sorted order "
            f"{', '.join(class_names)}): {format_paths(disagreeing)}; fix the list."
        )
    if not paths:
        raise DataError(f"{kind.capitalize()} {list_path!r} lists no images; give it some lines.")
    return paths, labels


def classes_from_lists(
    list_paths: list[str], folders: tuple[str, ...], *, base: int = 0
) -> tuple[str, ...]:
    """The class names in label order, as the lists number the class ``folders``.

    Label ``i`` names the folder its listed images lie in. A number naming two folders, a folder
    given two numbers, or a number outside the range of the folders is a DataError; numbers no
    list uses take the folders no list names, in sorted order.
    """
    named: dict[int, set[str]] = {}
    numbered: dict[str, dict[int, str]] = {}  # folder -> number -> the first list giving it
    for list_path in list_paths:
        for relative, number in parse_image_list(list_path, "image list", base):
            folder = relative.split("/")[-2] if "/" in relative else ""
            named.setdefault(number - base, set()).add(folder)
            numbered.setdefault(folder, {}).setdefault(number, list_path)
    outside = sorted(number + base for number in named if not 0 <= number < len(folders))
    if outside:
        raise DataError(
            f"The lists {', '.join(map(repr, list_paths))} use class numbers outside "
            f"{base}..{base + len(folders) - 1} (the {len(folders)} class folders): "
            f"{format_paths([str(n) for n in outside])}; fix the lists."
        )
    doubled = [
        f"{n + base}: {', '.join(sorted(f))}" for n, f in sorted(named.items()) if len(f) > 1
    ]
    if doubled:
        raise DataError(
            f"The lists {', '.join(map(repr, list_paths))} give one class number to images of "
            f"several folders ({format_paths(doubled)}); fix the lists."
        )
    _check_one_number_per_folder(numbered)
    taken = {next(iter(f)) for f in named.values()}
    spare = iter(sorted(set(folders) - taken))
    return tuple(
        next(iter(named[i])) if i in named else next(spare, "") for i in range(len(folders))
    )


def _check_one_number_per_folder(numbered: dict[str, dict[int, str]]) -> None:
    """A DataError naming each folder whose images the lists give several class numbers, with
    the list that first gives each number."""
    several = [
        f"{folder!r}: " + ", ".join(f"{n} in {path!r}" for n, path in sorted(numbers.items()))
        for folder, numbers in sorted(numbered.items())
        if len(numbers) > 1
    ]
    if several:
        shown = "; ".join(several[:10]) + (f"; ... ({len(several)} folders)" * (len(several) > 10))
        raise DataError(
            f"The lists give the images of one folder several class numbers ({shown}); "
            "a folder is one class: fix the lists."
        )
