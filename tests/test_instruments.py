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
