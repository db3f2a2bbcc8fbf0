"""MJCF for the built-in tabletop: a 7-DoF arm of primitive geoms, a parallel gripper, cubes, plates.

Primitive geoms and no shadows, reflections or skybox keep rendering cheap on a CPU, where the
software rasteriser's cost grows with the triangles drawn (docs/benchmarks.md has the figures).
"""

from __future__ import annotations

COLOURS = {
    "red": "0.85 0.15 0.15 1",
    "green": "0.15 0.7 0.2 1",
    "blue": "0.15 0.3 0.9 1",
    "yellow": "0.95 0.85 0.1 1",
    "purple": "0.6 0.2 0.75 1",
}
CUBE_HALF = 0.02
PLATE_RADIUS = 0.06
FINGER_TRAVEL = 0.045  # each finger slides 0..FINGER_TRAVEL from the centre (open = travel)
HOME_QPOS = (0.0, 0.698, 0.0, 1.745, 0.0, 0.698, 0.0)


def _cube(name: str) -> str:
    return f"""
    <body name="{name}" pos="0.5 0 {CUBE_HALF}">
      <freejoint name="{name}_joint"/>
      <geom name="{name}_geom" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" rgba="{COLOURS[name.split("_")[0]]}"
            mass="0.05" friction="1.5 0.02 0.001" condim="4"/>
    </body>"""


def _plate(name: str) -> str:
    return f"""
    <body name="{name}" pos="0.5 0.2 0.001">
      <geom name="{name}_geom" type="cylinder" size="{PLATE_RADIUS} 0.001" rgba="{COLOURS[name.split("_")[0]]}"
            contype="0" conaffinity="0"/>
    </body>"""


# The arm, base to hand: (body, offset from its parent, joint, axis, range, geom, geom colour, mass).
# One table feeds the kinematic chain and the actuators; the hand and fingers follow `HAND`.
WHITE, DARK = "0.9 0.9 0.92 1", "0.25 0.25 0.28 1"
ARM = [
    ("l1", "0 0 0.1", "j1", "0 0 1", "-2.8 2.8", 'type="capsule" fromto="0 0 0 0 0 0.25" size="0.045"', WHITE, 2),
    ("l2", "0 0 0.25", "j2", "0 1 0", "-1.7 1.7", 'type="capsule" fromto="0 0 0 0 0 0.35" size="0.04"', WHITE, 1.5),
    ("l3", "0 0 0.35", "j3", "0 0 1", "-2.8 2.8", 'type="sphere" size="0.045"', DARK, 0.5),
    ("l4", "0 0 0", "j4", "0 1 0", "-0.1 2.9", 'type="capsule" fromto="0 0 0 0 0 0.35" size="0.035"', WHITE, 1.2),
    ("l5", "0 0 0.35", "j5", "0 0 1", "-2.8 2.8", 'type="sphere" size="0.04"', DARK, 0.4),
    ("l6", "0 0 0", "j6", "0 1 0", "-1.7 2.9", 'type="capsule" fromto="0 0 0 0 0 0.06" size="0.03"', WHITE, 0.4),
]
HAND_JOINT = ("j7", "0 0 1", "-2.8 2.8")
ARM_JOINTS = [j for _, _, j, _, _, _, _, _ in ARM] + [HAND_JOINT[0]]
ARM_KP = 1500

HAND = f"""
<body name="hand" pos="0 0 0.08" gravcomp="1">
  <joint name="{HAND_JOINT[0]}" axis="{HAND_JOINT[1]}" range="{HAND_JOINT[2]}"/>
  <geom type="box" size="0.02 0.06 0.015" rgba="{DARK}" mass="0.3"/>
  <camera name="wrist" pos="0.05 0 0.02" xyaxes="0 1 0 0.8321 0 0.5547" fovy="75"/>
  <site name="grip" pos="0 0 0.095" size="0.005" rgba="1 0 0 0"/>
  <body name="finger_l" pos="0 0 0.015" gravcomp="1">
    <joint name="f_l" type="slide" axis="0 1 0" range="0 {FINGER_TRAVEL}" damping="5"/>
    <geom type="box" size="0.018 0.006 0.045" pos="0 0.006 0.045" rgba="0.35 0.35 0.38 1"
          friction="2 0.05 0.001" condim="4" mass="0.05"/>
  </body>
  <body name="finger_r" pos="0 0 0.015" gravcomp="1">
    <joint name="f_r" type="slide" axis="0 -1 0" range="0 {FINGER_TRAVEL}" damping="5"/>
    <geom type="box" size="0.018 0.006 0.045" pos="0 -0.006 0.045" rgba="0.35 0.35 0.38 1"
          friction="2 0.05 0.001" condim="4" mass="0.05"/>
  </body>
</body>"""


def _arm_chain() -> str:
    """The nested bodies of `ARM`, innermost the hand."""
    xml = HAND
    for body, pos, joint, axis, rng, geom, rgba, mass in reversed(ARM):
        xml = f"""
<body name="{body}" pos="{pos}" gravcomp="1">
  <joint name="{joint}" axis="{axis}" range="{rng}"/>
  <geom {geom} rgba="{rgba}" contype="0" conaffinity="0" mass="{mass}"/>{xml}
</body>"""
    return xml


def scene_xml(cubes: list[str], plates: list[str], image_size: int) -> str:
    objects = "".join(_cube(f"{c}_cube") for c in cubes) + "".join(_plate(f"{p}_plate") for p in plates)
    ranges = [(j, r) for _, _, j, _, r, _, _, _ in ARM] + [(HAND_JOINT[0], HAND_JOINT[2])]
    actuators = "".join(
        f'<position name="a_{n}" joint="{n}" kp="{ARM_KP}" kv="80" ctrlrange="{r}"/>' for n, r in ranges
    )
    return f"""
<mujoco model="vla_tabletop">
  <compiler angle="radian"/>
  <option timestep="0.002" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{image_size}" offheight="{image_size}"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <default>
    <joint damping="2" armature="0.05"/>
    <geom solimp="0.95 0.99 0.001"/>
  </default>
  <worldbody>
    <light pos="0.4 0 1.5" dir="0 0 -1" castshadow="false" diffuse="0.4 0.4 0.4"/>
    <geom name="table" type="plane" size="3 3 0.01" rgba="0.55 0.45 0.35 1"/>
    <camera name="agentview" pos="0.9 0 0.4" xyaxes="0 1 0 -0.689 0 0.725" fovy="50"/>
    <body name="base" pos="0 0 0">
      <geom type="cylinder" size="0.07 0.05" pos="0 0 0.05" rgba="{DARK}" contype="0" conaffinity="0"/>{_arm_chain()}
    </body>
    {objects}
  </worldbody>
  <actuator>
    {actuators}
    <position name="a_fl" joint="f_l" kp="300" kv="10" ctrlrange="0 {FINGER_TRAVEL}" forcerange="-10 10"/>
    <position name="a_fr" joint="f_r" kp="300" kv="10" ctrlrange="0 {FINGER_TRAVEL}" forcerange="-10 10"/>
  </actuator>
</mujoco>
"""
