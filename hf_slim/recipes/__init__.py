"""YAML recipes: validated descriptions of a compression run, executed stage by stage by [`RecipeRunner`]."""

from .runner import RecipeRunner, run_recipe
from .schema import Recipe, RecipeError, Stage, load_recipe

__all__ = ["Recipe", "RecipeError", "RecipeRunner", "Stage", "load_recipe", "run_recipe"]
