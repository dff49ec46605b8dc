"""Open-ended steering tasks that a small base model shows (sentiment, topic), one file each.

Each continuation is scored by the task's scorer, also with an ActAdd vector's own words masked
(ActAdd's "Love"/"Hate" leak into the text and the scorer would count them); fluency is the
perplexity of the continuations under the unsteered model.
"""

from .registry import Task, get_task, register_task, tasks
from .run import mask_words, run_task
from .sentiment import sentiment_pairs, vader_scores
from .topic import TOPIC_WORDS, mentions_weddings, topic_pairs

TASKS = tuple(sorted(tasks()))

__all__ = ["TASKS", "TOPIC_WORDS", "Task", "get_task", "mask_words", "mentions_weddings", "register_task",
           "run_task", "sentiment_pairs", "tasks", "topic_pairs", "vader_scores"]
