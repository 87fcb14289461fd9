"""What the agent sees, in words, and the high-level actions it can take from there.

`View.of(env)` reads an (unwrapped) MiniGrid env: the objects in the agent's field of view (walls
and occlusion respected), each numbered per name from near to far ("red ball 1" is the nearest
red ball), what lies straight ahead and what the agent carries. `View.actions()` lists every
high-level action valid now with the MiniGrid primitives it compiles to; paths are searched only
through cells the agent can see, so an action never relies on hidden knowledge.

Only plain Python here: minigrid objects are read through their attributes, never imported.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

# MiniGridEnv.Actions values.
LEFT, RIGHT, FORWARD, PICKUP, DROP, TOGGLE = 0, 1, 2, 3, 4, 5
PRIMITIVE_NAMES = {LEFT: "left", RIGHT: "right", FORWARD: "forward", PICKUP: "pickup", DROP: "drop", TOGGLE: "toggle"}

# MiniGrid direction index -> unit vector (0 = east, 1 = south, 2 = west, 3 = north).
DIR_VECS = ((1, 0), (0, 1), (-1, 0), (0, -1))

PICKABLE = ("key", "ball", "box")
CHECK_ACTIONS = "check available actions"

Pos = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Thing:
    """One visible object, placed relative to the agent: `ahead` cells forward, `right` cells right."""

    kind: str
    color: str
    state: str | None  # doors only: "open", "closed" or "locked"
    pos: Pos
    ahead: int
    right: int
    number: int

    @property
    def name(self) -> str:
        return f"{self.color} {self.kind}"

    @property
    def label(self) -> str:
        return f"{self.name} {self.number}"

    def describe(self) -> str:
        state = f" ({self.state})" if self.state else ""
        return f"a {self.label}{state}, {_where(self.ahead, self.right)}"


@dataclass(frozen=True, slots=True)
class Plan:
    """A valid high-level action: the primitives it runs, in order."""

    primitives: tuple[int, ...]


def _steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def _where(ahead: int, right: int) -> str:
    side = "right" if right > 0 else "left"
    if right == 0:
        return "right in front of you" if ahead == 1 else f"{_steps(ahead)} straight ahead"
    if ahead == 0:
        return f"{_steps(abs(right))} to your {side}"
    return f"{_steps(ahead)} ahead and {abs(right)} to your {side}"


def _passable(cell: Any) -> bool:
    # Lava can be walked onto but ends the episode: never route through it.
    if cell is None:
        return True
    if cell.type == "door":
        return bool(cell.is_open)
    return cell.type in ("goal", "floor")


class View:
    """The agent's view at one moment. Cheap to build: one per observation."""

    def __init__(self, env: Any, image: Any = None) -> None:
        self.env = env
        self.pos: Pos = (int(env.agent_pos[0]), int(env.agent_pos[1]))
        self.dir: int = int(env.agent_dir)
        self.carrying = env.carrying
        self.cells: dict[Pos, Any] = {self.pos: None}
        self.things: list[Thing] = []
        self._read_view(image)
        self._reached: dict[tuple[Pos, int], tuple[tuple[Pos, int], int] | None] | None = None

    @classmethod
    def of(cls, env: Any, image: Any = None) -> "View":
        """`image`: the observation image MiniGrid returned for the current state, if at hand. Its
        unseen cells (object index 0) are exactly the hidden ones, which spares recomputing them."""
        return cls(env, image)

    # -- perception -------------------------------------------------------------------------------

    def _read_view(self, image: Any) -> None:
        env = self.env
        size = env.agent_view_size
        vis_mask = env.gen_obs_grid()[1] if image is None else image[:, :, 0] != 0
        fx, fy = DIR_VECS[self.dir]
        rx, ry = -fy, fx
        x0, y0 = self.pos
        found: list[tuple[Any, Pos, int, int]] = []
        for vj in range(size):
            ahead = size - 1 - vj
            for vi in range(size):
                if not vis_mask[vi, vj]:
                    continue
                right = vi - size // 2
                x, y = x0 + fx * ahead + rx * right, y0 + fy * ahead + ry * right
                if not (0 <= x < env.width and 0 <= y < env.height) or (x, y) == self.pos:
                    continue
                cell = env.grid.get(x, y)
                self.cells[(x, y)] = cell
                if cell is not None and cell.type != "wall":
                    found.append((cell, (x, y), ahead, right))
        # Near to far, then ahead before beside, then left to right: a stable numbering.
        found.sort(key=lambda f: (abs(f[2]) + abs(f[3]), -f[2], f[3]))
        counts: dict[str, int] = {}
        for cell, pos, ahead, right in found:
            name = f"{cell.color} {cell.type}"
            counts[name] = counts.get(name, 0) + 1
            state = None
            if cell.type == "door":
                state = "locked" if cell.is_locked else "open" if cell.is_open else "closed"
            self.things.append(Thing(cell.type, cell.color, state, pos, ahead, right, counts[name]))

    @property
    def front(self) -> Pos:
        dx, dy = DIR_VECS[self.dir]
        return (self.pos[0] + dx, self.pos[1] + dy)

    def front_cell(self) -> Any:
        return self.env.grid.get(*self.front)

    def thing_at(self, pos: Pos) -> Thing | None:
        return next((t for t in self.things if t.pos == pos), None)

    def describe(self) -> str:
        """The view in words: objects, what is straight ahead, what the agent carries."""
        if self.things:
            seen = "You see " + "; ".join(t.describe() for t in self.things) + "."
        else:
            seen = "You see no objects, only walls and floor."
        carrying = (
            f"You are carrying a {self.carrying.color} {self.carrying.type}."
            if self.carrying
            else "You are not carrying anything."
        )
        return f"{seen}\n{self._describe_ahead()}\n{carrying}"

    def _describe_ahead(self) -> str:
        dx, dy = DIR_VECS[self.dir]
        x, y = self.pos
        for distance in range(1, self.env.agent_view_size):
            x, y = x + dx, y + dy
            if (x, y) not in self.cells:
                return f"Ahead of you the floor is clear for {_steps(distance - 1)}, as far as you can see."
            cell = self.cells[(x, y)]
            if cell is None:
                continue
            what = "a wall" if cell.type == "wall" else f"the {self.thing_at((x, y)).label}"
            if cell.type == "door":
                what += f" ({self.thing_at((x, y)).state})"
            if distance == 1:
                return f"Right in front of you is {what}."
            return f"Straight ahead, {_steps(distance)} away, is {what}."
        return f"Ahead of you the floor is clear for {_steps(self.env.agent_view_size - 1)}, as far as you can see."

    # -- path finding -----------------------------------------------------------------------------

    def _walkable(self, pos: Pos) -> bool:
        return pos in self.cells and _passable(self.cells[pos])

    def _reachable(self) -> dict[tuple[Pos, int], tuple[tuple[Pos, int], int] | None]:
        """Every (position, direction) reachable through visible free cells, in breadth-first
        order (forward before turns), each with the state and primitive it is reached from."""
        if self._reached is not None:
            return self._reached
        start = (self.pos, self.dir)
        came_from: dict[tuple[Pos, int], tuple[tuple[Pos, int], int] | None] = {start: None}
        queue = deque([start])
        while queue:
            state = queue.popleft()
            pos, d = state
            dx, dy = DIR_VECS[d]
            ahead = (pos[0] + dx, pos[1] + dy)
            if self._walkable(ahead) and (ahead, d) not in came_from:
                came_from[(ahead, d)] = (state, FORWARD)
                queue.append((ahead, d))
            for turned, action in (((pos, (d - 1) % 4), LEFT), ((pos, (d + 1) % 4), RIGHT)):
                if turned not in came_from:
                    came_from[turned] = (state, action)
                    queue.append(turned)
        self._reached = came_from
        return came_from

    def path(self, goal: Callable[[Pos, int], bool]) -> list[int] | None:
        """Fewest primitives (turns and forward moves through visible free cells) to a state
        (position, direction) accepted by `goal`; None when no such path exists in view."""
        came_from = self._reachable()
        # Dicts keep insertion order, which is breadth-first order: the first match is nearest.
        state = next((s for s in came_from if goal(*s)), None)
        if state is None:
            return None
        actions: list[int] = []
        link = came_from[state]
        while link is not None:
            state, action = link
            actions.append(action)
            link = came_from[state]
        return actions[::-1]

    def path_to_face(self, target: Pos) -> list[int] | None:
        return self.path(lambda pos, d: (pos[0] + DIR_VECS[d][0], pos[1] + DIR_VECS[d][1]) == target)

    def _crossing_dirs(self, door: Pos) -> tuple[int, ...]:
        """Directions that lead through `door` (a door sits in a wall: it is crossed across the wall)."""
        x, y = door
        left, right = self.env.grid.get(x - 1, y), self.env.grid.get(x + 1, y)
        horizontal_wall = (left is not None and left.type == "wall") or (right is not None and right.type == "wall")
        return (1, 3) if horizontal_wall else (0, 2)

    def path_through(self, door: Pos) -> list[int] | None:
        """Onto the open door's cell facing away from the agent's side, then one step beyond."""
        dirs = self._crossing_dirs(door)
        if self.pos != door:
            away = [d for d in dirs if DIR_VECS[d][0] * (door[0] - self.pos[0]) + DIR_VECS[d][1] * (door[1] - self.pos[1]) > 0]
            dirs = tuple(away) or dirs
        plan = self.path(lambda pos, d: pos == door and d in dirs)
        return None if plan is None else plan + [FORWARD]

    # -- the action catalogue ---------------------------------------------------------------------

    def actions(self) -> tuple[dict[str, Plan], dict[str, str]]:
        """(valid actions -> plan, impossible actions on visible objects -> why not)."""
        valid: dict[str, Plan] = {"turn left": Plan((LEFT,)), "turn right": Plan((RIGHT,))}
        why_not: dict[str, str] = {}

        front = self.front_cell()
        if _passable(front) or (front is not None and front.type == "lava"):
            valid["move forward"] = Plan((FORWARD,))
        else:
            blocker = "a wall" if front.type == "wall" else f"the {self.thing_at(self.front).label}"
            why_not["move forward"] = f"{blocker} is in front of you and blocks the way"

        for thing in self.things:
            self._object_actions(thing, valid, why_not)

        if self.carrying is None:
            why_not["drop"] = "you are not carrying anything"
        elif front is not None:
            why_not["drop"] = "the cell in front of you is not empty; face an empty cell to drop"
        else:
            valid["drop"] = Plan((DROP,))

        toggle_reason = self._toggle_blocker(front)
        if toggle_reason is None:
            valid["toggle"] = Plan((TOGGLE,))
        else:
            why_not["toggle"] = toggle_reason

        valid[CHECK_ACTIONS] = Plan(())
        self._reached = None  # the plans are made: a session keeps no search (it would double its memory)
        return valid, why_not

    def _toggle_blocker(self, front: Any) -> str | None:
        if front is None or front.type not in ("door", "box"):
            return "there is no door or box right in front of you to toggle"
        if front.type == "door" and front.is_locked:
            return self._key_problem(front)
        return None

    def _key_problem(self, door: Any) -> str | None:
        if self.carrying is None or self.carrying.type != "key":
            return f"the {door.color} door is locked; you need to carry the {door.color} key"
        if self.carrying.color != door.color:
            return f"the {door.color} door is locked and your {self.carrying.color} key does not fit; it needs the {door.color} key"
        return None

    def _object_actions(self, thing: Thing, valid: dict[str, Plan], why_not: dict[str, str]) -> None:
        label = thing.label
        to_face = self.path_to_face(thing.pos)
        no_path = f"there is no free path in view to the {label}"

        go_to = f"go to {label}"
        if to_face == []:
            why_not[go_to] = f"you are already facing the {label}"
        elif to_face is None:
            why_not[go_to] = no_path
        else:
            valid[go_to] = Plan(tuple(to_face))

        if thing.kind in PICKABLE:
            pick_up = f"pick up {label}"
            if self.carrying is not None:
                why_not[pick_up] = f"you are already carrying a {self.carrying.color} {self.carrying.type}; drop it first"
            elif to_face is None:
                why_not[pick_up] = no_path
            else:
                valid[pick_up] = Plan((*to_face, PICKUP))

        if thing.kind == "door":
            self._door_actions(thing, to_face, valid, why_not)

    def _door_actions(self, door: Thing, to_face: list[int] | None, valid: dict[str, Plan], why_not: dict[str, str]) -> None:
        label = door.label
        go_through = f"go through {label}"
        toggle_through = f"toggle and go through {label}"
        if door.state == "open":
            why_not[toggle_through] = f"the {label} is already open; use \"{go_through}\""
            plan = self.path_through(door.pos)
            if plan is None:
                why_not[go_through] = f"there is no free path in view through the {label}"
            else:
                valid[go_through] = Plan(tuple(plan))
            return
        why_not[go_through] = f"the {label} is {door.state}; use \"{toggle_through}\" to open it and walk through"
        key_problem = self._key_problem(self.env.grid.get(*door.pos)) if door.state == "locked" else None
        if key_problem is not None:
            why_not[toggle_through] = key_problem
        elif to_face is None:
            why_not[toggle_through] = f"there is no free path in view to the {label}"
        else:
            valid[toggle_through] = Plan((*to_face, TOGGLE, FORWARD, FORWARD))

