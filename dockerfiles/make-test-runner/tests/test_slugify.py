import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slugify import slugify  # noqa: E402


class SlugifyTest(unittest.TestCase):
    def test_spaces_and_case(self):
        self.assertEqual(slugify("Hello World"), "hello-world")

    def test_accents(self):
        self.assertEqual(slugify("Crème brûlée"), "creme-brulee")

    def test_punctuation_trimmed(self):
        self.assertEqual(slugify("  --Kiln: boots! "), "kiln-boots")


if __name__ == "__main__":
    unittest.main()
