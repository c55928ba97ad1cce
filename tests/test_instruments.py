from notagen.instruments import (
    PIANO_HIGH,
    PIANO_LOW,
    UNKNOWN,
    by_name,
    clef_of,
    identify,
    identify_voice,
    part_names,
    voice_instruments,
)


def test_specific_names_win_over_general_ones():
    assert by_name("Violoncello").name == "Violoncello"
    assert by_name("Double Bass").name == "Contrabass"
    assert by_name("Corno inglese").name == "English Horn"
    assert by_name("Horn in F").name == "Horn"
    assert by_name("Soprano Saxophone").name == "Saxophone"
    assert by_name("Basso continuo").name == "Violoncello"
    assert by_name("Violin I").name == "Violin" and by_name("Viola").name == "Viola"
    assert by_name("Klavier").family == "keyboard"
    assert by_name("Something else") is None
    assert by_name(r"Chant\nVoice").name == "Voice"                        # ABC's line break separates words
    assert by_name(r"Piano\nfor practice only").name == "Piano"


def test_voice_definitions_give_names_and_clefs():
    definition = 'V:3 bass nm="Tenor" snm="T."'
    assert part_names(definition) == ["Tenor", "T."]
    assert clef_of(definition) == "bass"
    assert identify_voice(definition).name == "Tenor"
    assert clef_of('V:1 treble nm="Bass clef flute"') == "treble"  # a name is not a clef
    assert identify_voice("V:2 alto").clef == "alto"
    assert identify_voice("V:2").name == "Treble part"
    assert identify("", None) is UNKNOWN


def test_ranges_with_margin_stay_on_the_piano():
    soprano = by_name("Soprano")
    assert soprano.allows(60) and soprano.allows(81) and soprano.allows(83) and not soprano.allows(84)
    assert not soprano.allows(57)
    low, high = UNKNOWN.bounds()
    assert (low, high) == (PIANO_LOW, PIANO_HIGH)
    assert not UNKNOWN.allows(PIANO_LOW - 1) and not UNKNOWN.allows(PIANO_HIGH + 1)


def test_unnamed_staves_of_a_brace_group_share_the_instrument():
    header = ['%%score { 1 | ( 2 3 ) } 4', 'V:1 treble nm="Piano" snm="Pno."', "V:2 bass", "V:3 bass",
              "V:4 bass"]
    instruments = voice_instruments(header)
    assert [instruments[v].name for v in "1234"] == ["Piano", "Piano", "Piano", "Bass part"]


def test_clefs_and_ensembles_of_the_instrumentation_labels():
    from notagen.instruments import ENSEMBLES, clef_fits, identify_part, match_ensemble, name_ensemble

    viola, cello, tenor = by_name("Viola"), by_name("Cello"), by_name("Tenor")
    assert clef_fits(viola, "alto") and not clef_fits(viola, "treble")
    assert clef_fits(cello, "bass") and clef_fits(cello, "tenor") and not clef_fits(cello, "treble")
    assert clef_fits(tenor, "treble") and clef_fits(tenor, "bass") and clef_fits(by_name("Piano"), "alto")
    quartet = [by_name(n) for n in ("Violin I", "Violin II", "Viola", "Violoncello")]
    satb = [by_name(n) for n in ("Soprano", "Alto", "Tenor", "Bass")]
    assert match_ensemble("Chamber", quartet).name == "string quartet"
    assert match_ensemble("Chamber", satb) is None and match_ensemble("Choral", satb).name == "SATB choir"
    assert match_ensemble("Art Song", [by_name("Tenor"), by_name("Piano")]).name == "tenor and piano"
    assert match_ensemble("Keyboard", [identify_part("", ["treble", "bass"])]).name == "piano"
    assert match_ensemble("Chamber", [by_name("Flute"), by_name("Piano")]).name == "duo with keyboard"
    assert match_ensemble("Unknown label", quartet) is None and "Unknown label" not in ENSEMBLES
    assert name_ensemble(satb) == "SATB choir" and name_ensemble([by_name("Oboe")]) == "Oboe"
    assert identify_part("", ["bass"]).name == "Bass part" and identify_part("Viola", ["alto"]).name == "Viola"


def test_score_staves_reads_the_layout_top_to_bottom():
    from notagen.instruments import score_staves

    assert score_staves(["%%score [ ( 1 2 ) | ( 3 4 ) ]", "V:1"]) == [["1", "2"], ["3", "4"]]
    assert score_staves(["%%score 1 { ( 2 3 ) | 4 }"]) == [["1"], ["2", "3"], ["4"]]
    assert score_staves(["V:1 treble"]) == []
